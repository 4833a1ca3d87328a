import assert from "node:assert/strict";
import { StopWatcher } from "./stop.ts";

Deno.test("StopWatcher releases text up to the first stop, holding back possible starts", () => {
  const w = new StopWatcher(["\n\n", "THE END"]);
  assert.equal(w.push("Once upon"), "Once upon");
  assert.equal(w.push(" a time.\n"), " a time.");
  assert.equal(w.push("She"), "\nShe");
  assert.equal(w.push(" said THE"), " said ");
  assert.equal(w.push(" EN"), "");
  assert.equal(w.push("D and more"), "");
  assert.ok(w.stopped);
  assert.equal(w.push("ignored"), "");
});

Deno.test("StopWatcher flushes held text when the stream ends without a stop", () => {
  const w = new StopWatcher(["###"]);
  assert.equal(w.push("a#"), "a");
  assert.equal(w.push("#"), "");
  assert.equal(w.flush(), "##");
  assert.ok(!w.stopped);
});

Deno.test("StopWatcher with a stop spanning pieces cuts exactly before it", () => {
  const w = new StopWatcher(["lily"]);
  let out = "";
  for (const piece of ["Hello l", "i", "ly and friends"]) out += w.push(piece);
  assert.equal(out, "Hello ");
  assert.ok(w.stopped);
});
