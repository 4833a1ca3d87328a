/**
 * Prints the token ids of a text, as the model's tokenizer makes them (BOS first when the model
 * adds one), like llama.cpp's llama-tokenize. No GPU is used and no weights are read.
 *
 *   deno task tokenize [--model PATH] (--text TEXT | --text-file FILE) [--ids | --json]
 *
 * Prints one line per token (`    id -> 'piece'`), or with --ids the list of ids, or with --json
 * one JSON object. Exit codes: 0 done, 1 the model or a file could not be read, 2 bad command
 * line.
 */
import {
  ggufTokenizer,
  loadModelFiles,
  ModelFormatError,
  readGguf,
  type Tokenizer,
} from "../gpu.ts";
import {
  CommandError,
  DEFAULT_MODEL,
  parseFlags,
  readFlagFile,
  runCommand,
  UsageError,
} from "./cli.ts";

const USAGE = `usage: deno task tokenize [options] (--text TEXT | --text-file FILE)

  --model PATH               GGUF file, llama2.c checkpoint (.bin, tokenizer beside it) or
                             Hugging Face folder (default: the stories260K model in
                             models/stories260K/)
  --tokenizer PATH           tokenizer file or folder, when it is not beside the model
  --text TEXT                the text to tokenize
  --text-file FILE           read the text from a file (UTF-8)
  --no-bos                   do not add BOS even where the model does
  --ids                      print only the ids, as a list: [1, 15043, 3186]
  --json                     print one JSON object {model, bos, count, ids, pieces}
  --help                     this help`;

interface Settings {
  model: string;
  tokenizer?: string;
  text?: string;
  textFile?: string;
  bos: boolean;
  output: "lines" | "ids" | "json";
}

function parseSettings(args: string[]): Settings | "help" {
  const v = parseFlags({
    model: { type: "string" },
    tokenizer: { type: "string" },
    text: { type: "string" },
    "text-file": { type: "string" },
    "no-bos": { type: "boolean", default: false },
    ids: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  }, args);
  if (v.help) return "help";
  if ((v.text === undefined) === (v["text-file"] === undefined)) {
    throw new UsageError("give the text with exactly one of --text and --text-file");
  }
  if (v.ids && v.json) throw new UsageError("--ids and --json do not go together");
  const model = v.model ?? DEFAULT_MODEL;
  if (model === "") throw new UsageError("--model needs a path");
  return {
    model,
    tokenizer: v.tokenizer,
    text: v.text,
    textFile: v["text-file"],
    bos: !v["no-bos"],
    output: v.json ? "json" : v.ids ? "ids" : "lines",
  };
}

/**
 * The model's tokenizer without its weights: a GGUF file's own vocabulary (checked against its
 * embedding), or what loadModelFiles pairs with the model.
 */
async function loadTokenizer(model: string, tokenizer?: string): Promise<Tokenizer> {
  try {
    if (model.toLowerCase().endsWith(".gguf") && tokenizer === undefined) {
      const gguf = await readGguf(model);
      return await ggufTokenizer(gguf, gguf.tensors.get("token_embd.weight")?.shape[0]);
    }
    return (await loadModelFiles(model, { tokenizerPath: tokenizer })).tokenizer;
  } catch (error) {
    if (error instanceof ModelFormatError) {
      const flag = tokenizer !== undefined && error.file === tokenizer ? "--tokenizer" : "--model";
      const named = error.file.startsWith(model) ||
        (tokenizer !== undefined && error.file.startsWith(tokenizer));
      throw new CommandError(
        named ? `${flag} ${error.message}` : `${flag} ${model}: ${error.message}`,
      );
    }
    throw error;
  }
}

/** What each id adds to the text (special tokens by their names, as llama-tokenize shows them). */
function pieces(tokenizer: Tokenizer, ids: number[]): string[] {
  const stream = tokenizer.streamDecoder();
  const named = tokenizer as { idToToken?: (id: number) => string | undefined };
  return ids.map((id) => {
    const text = stream.push(id);
    if (id === tokenizer.bosId || id === tokenizer.eosId) {
      return named.idToToken?.(id) ?? (id === tokenizer.bosId ? "<bos>" : "<eos>");
    }
    return text;
  });
}

async function main(): Promise<number> {
  const settings = parseSettings(Deno.args);
  if (settings === "help") {
    console.log(USAGE);
    return 0;
  }
  const text = settings.text ?? await readFlagFile("text-file", settings.textFile!);
  const tokenizer = await loadTokenizer(settings.model, settings.tokenizer);
  const ids = tokenizer.encode(text, { bos: settings.bos });
  if (settings.output === "ids") {
    console.log(`[${ids.join(", ")}]`);
  } else if (settings.output === "json") {
    console.log(JSON.stringify({
      model: settings.model,
      bos: settings.bos && tokenizer.bosId !== null,
      count: ids.length,
      ids,
      pieces: pieces(tokenizer, ids),
    }));
  } else {
    const shown = pieces(tokenizer, ids);
    console.log(ids.map((id, i) => `${String(id).padStart(6)} -> '${shown[i]}'`).join("\n"));
  }
  return 0;
}

if (import.meta.main) await runCommand("tokenize", main);
