import assert from "node:assert/strict";
import { basename, dirname, join, normalize } from "node:path";
import {
  sharedDataTest,
  sharedPath,
  STORIES260K,
  STORIES260K_TOKENIZER,
} from "../../kernels_test/test_data.ts";
import { serveStatic } from "../../browser/static_server.ts";
import { ModelFileNotFoundError } from "./errors.ts";
import {
  basenamePath,
  blobFiles,
  dirnamePath,
  joinPath,
  normalizePath,
  openFileForReading,
  storedPath,
  urlFiles,
} from "./files.ts";
import { readGguf } from "./gguf.ts";
import { loadModelFiles } from "./load.ts";

Deno.test("path helpers agree with node:path", () => {
  const paths = [
    "",
    ".",
    "/",
    "a",
    "a/",
    "/a/b/c.bin",
    "a//b/./c/",
    "../x/../../y",
    "/../a",
    "./models/stories260K/",
    "a/b/../../..",
  ];
  for (const p of paths) {
    assert.equal(normalizePath(p), normalize(p), `normalize ${JSON.stringify(p)}`);
    if (p !== "") {
      assert.equal(dirnamePath(p), dirname(p), `dirname ${JSON.stringify(p)}`);
      assert.equal(basenamePath(p), basename(p), `basename ${JSON.stringify(p)}`);
    }
    for (const q of ["tok512.bin", "../b", "", "c/d/"]) {
      assert.equal(joinPath(p, q), join(p, q), `join ${JSON.stringify(p)} ${JSON.stringify(q)}`);
    }
  }
});

/** What two loads of stories260K must share. */
async function sameModel(a: Awaited<ReturnType<typeof loadModelFiles>>) {
  const b = await loadModelFiles(STORIES260K);
  assert.deepEqual(a.config, b.config);
  assert.equal(a.format, "llama2c");
  const text = "Once upon a time, Lily saw a dog.";
  assert.deepEqual(
    a.tokenizer.encode(text, { bos: true }),
    b.tokenizer.encode(text, { bos: true }),
  );
  const name = "model.layers.3.mlp.down_proj.weight";
  assert.deepEqual(a.weights.tensors.get(name)!.data, b.weights.tensors.get(name)!.data);
}

Deno.test("a model from chosen files (File objects) loads as from its path", async () => {
  const file = async (path: string, name: string) => new File([await Deno.readFile(path)], name);
  const files = [
    await file(STORIES260K_TOKENIZER, "tok512.bin"),
    await file(STORIES260K, "stories260K.bin"),
  ];
  const loaded = await loadModelFiles(files);
  assert.equal(loaded.path, "stories260K.bin");
  await sameModel(loaded);
  // A folder picker names files by relative path.
  const store = blobFiles({ "story/stories260K.bin": files[1], "story/tok512.bin": files[0] });
  assert.deepEqual((await store.list("story"))?.map((e) => e.name).sort(), [
    "stories260K.bin",
    "tok512.bin",
  ]);
  assert.deepEqual(
    await store.readRange("story/tok512.bin", 2, 3),
    (await Deno.readFile(
      STORIES260K_TOKENIZER,
    )).slice(2, 5),
  );
  assert.equal(await store.stat("story/none"), null);
  // Without its tokenizer, or with nothing that is a model, the error says so.
  await assert.rejects(loadModelFiles([files[1]]), ModelFileNotFoundError);
  await assert.rejects(
    loadModelFiles([new File(["hello"], "notes.txt")]),
    (e: unknown) => e instanceof ModelFileNotFoundError && /no model among them/.test(e.message),
  );
  assert.equal(storedPath(files[1]).path, "stories260K.bin");
});

Deno.test({
  name: "a model from a URL loads as from its path; a missing one is ModelFileNotFoundError",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = dirname(STORIES260K);
    for (const noRanges of [false, true]) {
      const server = await serveStatic({ mounts: { "/m/": dir }, noRanges });
      try {
        const url = `${server.origin}/m/stories260K.bin`;
        const loaded = await loadModelFiles(url);
        assert.equal(loaded.path, url);
        await sameModel(loaded);
        await sameModel(await loadModelFiles(new URL(url)));
        // A positioned read asks for its range (and still works where ranges are ignored).
        const before = server.rangeRequests;
        const f = await openFileForReading(url, "test");
        assert.equal(f.size, (await Deno.stat(STORIES260K)).size);
        assert.deepEqual(await f.read(28, 8), (await Deno.readFile(STORIES260K)).slice(28, 36));
        assert.equal(server.rangeRequests > before, !noRanges);
        await assert.rejects(
          loadModelFiles(`${server.origin}/m/absent.bin`),
          ModelFileNotFoundError,
        );
        assert.equal(
          urlFiles.join(`${server.origin}/m/`, "tok512.bin"),
          `${server.origin}/m/tok512.bin`,
        );
        assert.equal(urlFiles.dirname(url), `${server.origin}/m/`);
      } finally {
        await server.close();
      }
    }
  },
});

sharedDataTest({
  name: "a GGUF file over HTTP is read by ranges: header, then tensor by tensor",
  needs: ["models/gguf/stories260K-q8_0.gguf"],
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const path = sharedPath("models/gguf/stories260K-q8_0.gguf");
    const server = await serveStatic({ mounts: { "/g/": dirname(path) } });
    try {
      const url = `${server.origin}/g/stories260K-q8_0.gguf`;
      const [web, local] = [await readGguf(url), await readGguf(path)];
      assert.deepEqual([...web.tensors.keys()], [...local.tensors.keys()]);
      assert.deepEqual(web.metadata, local.metadata);
      const name = "blk.2.ffn_down.weight";
      const requested = server.requested.length;
      assert.deepEqual(await web.readTensorBytes(name), await local.readTensorBytes(name));
      // One tensor: a size check and one range, not the whole file.
      assert.ok(server.requested.length - requested <= 2);
      assert.ok(server.rangeRequests >= 2);
      const loaded = await loadModelFiles(url);
      assert.equal(loaded.format, "gguf");
      assert.deepEqual(loaded.config, (await loadModelFiles(path)).config);
    } finally {
      await server.close();
    }
  },
});
