import assert from "node:assert/strict";
import { taskCommand } from "./testing.ts";

Deno.test("serve: SIGTERM ends running streams with an error event, frees all, exit 0", async () => {
  const child = (await taskCommand("serve", ["--port", "0"])).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await stdout.read();
    if (done) break;
    banner += value;
  }
  const url = banner.match(/at (http:\/\/\S+)\/v1/)?.[1];
  assert.ok(url, banner);
  const response = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 4000, stream: true }),
  });
  assert.equal(response.status, 200);
  const events = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let received = "";
  while (!received.includes("\n\n")) received += (await events.read()).value ?? "";

  child.kill("SIGTERM");
  for (;;) {
    const { value, done } = await events.read();
    if (done) break;
    received += value;
  }
  const status = await child.status;
  await stdout.cancel();
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert.equal(status.code, 0, stderr);
  const data = received.trim().split("\n\n").map((e) => e.replace(/^data: /, ""));
  const last = JSON.parse(data[data.length - 1]);
  assert.equal(last.error?.code, "server_shutdown", data[data.length - 1]);
  assert.ok(!data.includes("[DONE]"));
  assert.equal(stderr, "templora: stopping\ntemplora: stopped\n");
});
