import assert from "node:assert/strict";
import { backendOfSetting } from "./device.ts";

const DEVICE = new URL("./device.ts", import.meta.url).href;

/** Acquires a GPU twice in a fresh process (the WebGPU instance is made once per process). */
async function acquireInChild(env: Record<string, string | undefined>, requireGpu = false) {
  const script = `
    import { acquireGpu } from ${JSON.stringify(DEVICE)};
    try {
      // Twice: every adapter request enumerates the adapters again (as after a lost device).
      (await acquireGpu({ requireGpu: ${requireGpu} })).destroy();
      const gpu = await acquireGpu({ requireGpu: ${requireGpu} });
      console.log(JSON.stringify({
        capabilities: gpu.capabilities,
        xdg: Deno.env.get("XDG_RUNTIME_DIR") ?? null,
        backendVariable: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null,
      }));
      gpu.destroy();
    } catch (error) {
      console.log(JSON.stringify({ error: error.name, message: error.message }));
    }`;
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...Deno.env.toObject(), ...env })) {
    if (v !== undefined) childEnv[k] = v;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    env: childEnv,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return { result: JSON.parse(stdout), stderr };
}

Deno.test("DENO_WEBGPU_BACKEND is read as wgpu reads it", () => {
  assert.equal(backendOfSetting("vulkan"), "primary");
  assert.equal(backendOfSetting("Vulkan, metal,dx12"), "primary");
  assert.equal(backendOfSetting("gl"), "gl");
  assert.equal(backendOfSetting("opengl"), "gl");
  assert.equal(backendOfSetting("vulkan,gl"), "unknown");
  assert.equal(backendOfSetting("nonsense"), "unknown");
});

Deno.test({
  name: "acquireGpu: a Vulkan adapter is preferred, and nothing is printed on stderr",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { result, stderr } = await acquireInChild({
      XDG_RUNTIME_DIR: undefined,
      DENO_WEBGPU_BACKEND: undefined,
    });
    assert.equal(result.error, undefined, result.message);
    assert.equal(result.capabilities.backend, "primary", "this machine has a Vulkan driver");
    assert.equal(stderr, "", "no XDG_RUNTIME_DIR notice, no warning, on either request");
    assert.equal(result.xdg, null, "XDG_RUNTIME_DIR is unset again afterwards");
    assert.equal(result.backendVariable, null, "DENO_WEBGPU_BACKEND is unset again afterwards");
  },
});

Deno.test({
  name: "acquireGpu: without a Vulkan driver, one warning line (or a refusal with requireGpu)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const env = { VK_ICD_FILENAMES: "/nonexistent.json", DENO_WEBGPU_BACKEND: undefined };
    const { result, stderr } = await acquireInChild(env);
    if (result.error) {
      // No OpenGL adapter either: the error says how to get one.
      assert.equal(result.error, "GpuUnavailableError");
      assert.match(result.message, /no WebGPU adapter was found.*mesa-vulkan-drivers/);
      assert.equal(stderr, "");
      return;
    }
    assert.equal(result.capabilities.backend, "gl");
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /^templora: warning: only an OpenGL adapter was found \(".+"\): /);
    assert.match(
      lines[0],
      /shaders compile far more slowly than through Vulkan.*apt-get install mesa-vulkan-drivers/,
    );

    const refused = await acquireInChild(env, true);
    assert.equal(refused.result.error, "GpuUnavailableError");
    assert.match(refused.result.message, /^only an OpenGL adapter was found/);
    assert.equal(refused.stderr, "");
  },
});

Deno.test({
  name: "acquireGpu: requireGpu refuses a software adapter",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { result } = await acquireInChild({ DENO_WEBGPU_BACKEND: undefined }, true);
    const probe = await acquireInChild({ DENO_WEBGPU_BACKEND: undefined });
    if (probe.result.capabilities?.isFallbackAdapter) {
      assert.equal(result.error, "GpuUnavailableError");
      assert.match(result.message, /^only a software adapter was found \(".+", which runs on/);
    } else {
      assert.equal(result.error, undefined, result.message);
    }
  },
});
