import assert from "node:assert/strict";
import {
  constantName,
  GENERATED_MODULE,
  readShaderFiles,
  renderShaderModule,
} from "../../tools/gen_shaders.ts";
import * as generated from "./shaders.generated.ts";

Deno.test("shaders.generated.ts is current with shaders/*.wgsl (else: deno task gen:shaders)", async () => {
  const shaders = await readShaderFiles();
  assert.ok(shaders.size > 0);
  const onDisk = await Deno.readTextFile(GENERATED_MODULE);
  assert.ok(
    onDisk === renderShaderModule(shaders),
    "src/ops/shaders.generated.ts is stale: run `deno task gen:shaders`",
  );
  // The module evaluates back to the files' exact text, and has nothing else.
  const exports = generated as Record<string, string>;
  for (const [name, source] of shaders) assert.equal(exports[constantName(name)], source, name);
  assert.equal(Object.keys(exports).length, shaders.size);
});

Deno.test("no module in src/ imports a file as text (browsers and bundlers cannot)", async () => {
  const offenders: string[] = [];
  const walk = async (dir: URL) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(new URL(entry.name, dir));
        if (/with\s*\{\s*type:\s*["']text["']\s*\}/.test(text)) offenders.push(entry.name);
      }
    }
  };
  await walk(new URL("../", import.meta.url));
  assert.deepEqual(offenders, []);
});

Deno.test("a shader's text survives the generator's escaping", () => {
  const tricky = "// `ticks`, ${not a substitution}, a \\ backslash and \\`\n";
  const module = renderShaderModule(new Map([["tricky.wgsl", tricky]]));
  const literal = module.slice(module.indexOf("string =\n") + 11, module.lastIndexOf("`") + 1);
  assert.equal(new Function(`return ${literal};`)(), tricky);
  assert.equal(constantName("quant_blocks.wgsl"), "QUANT_BLOCKS_WGSL");
});
