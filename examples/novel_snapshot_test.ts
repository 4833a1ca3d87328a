import assert from "node:assert/strict";
import { join } from "node:path";

const STORY = ["--tokens", "96", "--window", "64", "--chunk", "16", "--seed", "5"];

function novel(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "examples/novel.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  });
}

async function json(args: string[]) {
  const out = await novel([...args, "--json"]).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.equal(stderr, "", "nothing on stderr");
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("novel --snapshot, Ctrl-C, then --resume writes the uninterrupted story", async () => {
  const root = await Deno.makeTempDir({ prefix: "templora_novel_snapshot_" });
  const dir = join(root, "story");
  try {
    const whole = await json(STORY);

    const child = novel([...STORY, "--snapshot", dir, "--snapshot-every", "2"]).spawn();
    const reader = child.stdout.getReader();
    let seen = "";
    while (seen.length < "Once upon a time".length + 60) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    child.kill("SIGINT");
    for (;;) if ((await reader.read()).done) break;
    const stderr = new TextDecoder().decode(
      await new Response(child.stderr).arrayBuffer(),
    );
    assert.equal((await child.status).code, 130, stderr);
    assert.match(stderr, /^\ninterrupted: \d+ tokens .*; snapshot in /);
    assert.ok(!/error/.test(stderr), stderr);

    const resumed = await json(["--resume", dir]);
    assert.equal(resumed.prompt, "Once upon a time");
    assert.equal(resumed.text, whole.text);
    assert.ok(("Once upon a time" + resumed.text).startsWith(seen));
    assert.equal(resumed.totals.tokens, 96);
    assert.ok(resumed.totals.resumed_tokens > 0 && resumed.totals.resumed_tokens < 96);
    assert.equal(resumed.totals.chunks_trained, whole.totals.chunks_trained);
    assert.deepEqual(resumed.settings.templora, whole.settings.templora);

    // The snapshot is a PEFT adapter folder.
    const config = JSON.parse(await Deno.readTextFile(join(dir, "adapter_config.json")));
    assert.equal(config.peft_type, "LORA");

    // A story's settings are its own; a new story does not overwrite another's snapshot.
    const changed = await novel(["--resume", dir, "--seed", "4"]).output();
    assert.equal(changed.code, 2);
    assert.match(new TextDecoder().decode(changed.stderr), /--seed cannot be given with it/);
    const clobber = await novel([...STORY, "--snapshot", dir]).output();
    assert.equal(clobber.code, 1);
    assert.match(
      new TextDecoder().decode(clobber.stderr),
      /^error: --snapshot .*: it holds the snapshot of another story; go on with that one/,
    );
    const missing = await novel(["--resume", join(root, "none")]).output();
    assert.equal(missing.code, 1);
    assert.match(new TextDecoder().decode(missing.stderr), /^error: .*none: no such folder/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
