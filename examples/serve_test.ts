import assert from "node:assert/strict";
import { runTask, taskCommand } from "./testing.ts";

Deno.test("serve: a busy port or a foreign address is one line naming the flag, exit code 1", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const { port } = busy.addr as Deno.NetAddr;
    const out = await runTask("serve", ["--port", String(port)]);
    assert.equal(out.code, 1);
    assert.equal(out.stdout, "");
    assert.equal(
      out.stderr,
      `error: --port ${port}: 127.0.0.1:${port} is already in use; stop what listens there or ` +
        "pick another port (--port 0 takes any free one)\n",
    );
  } finally {
    busy.close();
  }
  // 192.0.2.1 is reserved for documentation: never an address of this machine.
  const foreign = await runTask("serve", ["--host", "192.0.2.1", "--port", "8080"]);
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, /^error: --host 192\.0\.2\.1: not an address of this machine/);
  assert.equal(foreign.stderr.split("\n").length, 2);
});

Deno.test("serve: answers on any free port with the embedded model and stops on Ctrl-C", async () => {
  const child = (await taskCommand("serve", ["--port", "0"])).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    banner += value;
  }
  const url = banner.match(/at (http:\/\/\S+\/v1)/)?.[1];
  assert.ok(url, banner);
  assert.match(banner, /serving .*models\/stories260K\/stories260K\.bin at/);
  const response = await fetch(`${url}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 8, temperature: 0 }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.equal(typeof body.choices[0].text, "string");
  assert.equal(body.templora.train_context + body.templora.chunk, body.templora.window);
  child.kill("SIGINT");
  const status = await child.status;
  await reader.cancel();
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert.equal(status.code, 0);
  assert.equal(stderr, "templora: stopping\ntemplora: stopped\n");
});
