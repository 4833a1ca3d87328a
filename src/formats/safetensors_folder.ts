import { CorruptHeaderError, MissingTensorError, ModelFileNotFoundError } from "./errors.ts";
import { type FileStore, pathExists, readJsonFile, storeFor } from "./files.ts";
import { readSafetensors, type SafetensorsFile, type TensorEntry } from "./safetensors.ts";
import { type TensorData, tensorToF32 } from "./tensor_data.ts";

/** Tensors of one model spread over one or more safetensors files. */
export class SafetensorsSet {
  /** Built by readSafetensorsFolder. */
  constructor(
    /** Where the tensors were looked for (folder or file), for messages. */
    readonly source: string,
    /** Tensor name -> the file holding it. */
    readonly index: ReadonlyMap<string, SafetensorsFile>,
  ) {}

  /** Every tensor name of the set. */
  names(): string[] {
    return [...this.index.keys()];
  }

  /** Whether some file of the set holds that tensor. */
  has(name: string): boolean {
    return this.index.has(name);
  }

  /** Header facts of a tensor without reading it. */
  entry(name: string): TensorEntry & { file: string } {
    const f = this.index.get(name);
    if (!f) throw new MissingTensorError(this.source, name);
    return { ...f.entries.get(name)!, file: f.file };
  }

  /** The tensor with its stored dtype (see SafetensorsFile.raw). */
  raw(name: string): TensorData {
    const f = this.index.get(name);
    if (!f) throw new MissingTensorError(this.source, name);
    return f.raw(name);
  }

  /** The tensor as float32. */
  f32(name: string): Float32Array {
    return tensorToF32(this.raw(name));
  }
}

/**
 * Reads a folder's weights: the shards of model.safetensors.index.json when it exists, else
 * model.safetensors, else the folder's only .safetensors file (where the store can list folders).
 */
export async function readSafetensorsFolder(
  dir: string,
  store: FileStore = storeFor(dir),
): Promise<SafetensorsSet> {
  const indexPath = store.join(dir, "model.safetensors.index.json");
  if (await pathExists(indexPath, store)) return await readSharded(dir, indexPath, store);
  const single = store.join(dir, "model.safetensors");
  let path = single;
  if (!(await pathExists(single, store))) {
    const found = ((await store.list(dir)) ?? [])
      .filter((e) => e.isFile && e.name.endsWith(".safetensors"))
      .map((e) => e.name);
    if (found.length !== 1) {
      throw new ModelFileNotFoundError(
        dir,
        found.length === 0
          ? "no model.safetensors, model.safetensors.index.json or other .safetensors file"
          : `several .safetensors files (${found.sort().join(", ")}) but no ` +
            "model.safetensors.index.json to say which tensors are in which",
      );
    }
    path = store.join(dir, found[0]);
  }
  const f = await readSafetensors(path, store);
  return new SafetensorsSet(path, new Map(f.names().map((n) => [n, f])));
}

async function readSharded(
  dir: string,
  indexPath: string,
  store: FileStore,
): Promise<SafetensorsSet> {
  const index = await readJsonFile(indexPath, "safetensors index", store);
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new CorruptHeaderError(indexPath, "has no weight_map object");
  }
  const shards = new Map<string, SafetensorsFile>();
  const result = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\")) {
      throw new CorruptHeaderError(indexPath, `weight_map[${name}] = ${JSON.stringify(shard)}`);
    }
    let f = shards.get(shard);
    if (!f) {
      f = await readSafetensors(store.join(dir, shard), store);
      shards.set(shard, f);
    }
    if (!f.has(name)) {
      throw new MissingTensorError(f.file, name, `the index says it is in ${shard}`);
    }
    result.set(name, f);
  }
  return new SafetensorsSet(indexPath, result);
}
