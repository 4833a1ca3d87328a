/**
 * llama2.c tokenizer.bin: int32 max_token_length, then per token a float32 score, an int32 byte
 * length and the bytes. Encoding and decoding follow run.c's `encode` and `decode` exactly.
 */
import {
  CorruptHeaderError,
  InvalidTokenIdError,
  TokenizerMismatchError,
  TruncatedFileError,
} from "./errors.ts";
import type { EncodeOptions, StreamDecoder, Tokenizer } from "./tokenizer.ts";
import { type FileStore, readFileBytes, storeFor } from "./files.ts";

/** run.c's fixed ids. */
const BOS_ID = 1;
const EOS_ID = 2;
/** Byte b falls back to id b + 3 (ids 3..258 are <0x00>..<0xFF>). */
const BYTE_FALLBACK_OFFSET = 3;
/** run.c starts its best-merge search at this score; a pair must score above it to merge. */
const MERGE_SCORE_FLOOR = -1e10;
const MAX_PLAUSIBLE_TOKEN_LENGTH = 1 << 16;

/** Latin-1 string of raw bytes: a lossless, hashable key for a byte sequence. */
function bytesKey(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** A llama2.c tokenizer.bin vocabulary with run.c's encode/decode. */
export class Llama2cTokenizer implements Tokenizer {
  /** run.c's BOS id, 1. */
  readonly bosId: number = BOS_ID;
  /** run.c's EOS id, 2. */
  readonly eosId: number = EOS_ID;
  readonly #ids = new Map<string, number>();
  readonly #decodeBytes: Uint8Array[];

  /** Use parseTokenizerBin or readTokenizerBin, which validate the file. */
  constructor(
    /** Token byte strings, by id. */
    readonly pieces: readonly Uint8Array[],
    /** Merge priority by id (higher merges first). */
    readonly scores: Float32Array,
    /** The file's max_token_length field. */
    readonly maxTokenLength: number,
  ) {
    // On duplicate strings keep the lowest id (run.c's bsearch would pick an arbitrary one).
    for (let id = pieces.length - 1; id >= 0; id--) this.#ids.set(bytesKey(pieces[id]), id);
    this.#decodeBytes = pieces.map(rawPieceBytes);
  }

  get vocabSize(): number {
    return this.pieces.length;
  }

  /** Id of an exact byte string (given as a JS string of UTF-8 text), or undefined. */
  tokenId(text: string): number | undefined {
    return this.#ids.get(bytesKey(new TextEncoder().encode(text)));
  }

  encode(text: string, options: EncodeOptions): number[] {
    const bytes = new TextEncoder().encode(text);
    const tokens: number[] = [];
    if (options.bos) tokens.push(BOS_ID);
    const merged = mergePairs(this.#initialTokens(bytes), this.pieces, this.scores, this.#ids);
    for (const t of merged) tokens.push(t);
    if (options.eos) tokens.push(EOS_ID);
    return tokens;
  }

  /** The dummy-prefix space and one token per UTF-8 codepoint (or its bytes), before merging. */
  #initialTokens(bytes: Uint8Array): number[] {
    const out: number[] = [];
    if (bytes.length === 0) return out;
    const space = this.#ids.get(" ");
    if (space === undefined) {
      throw new TokenizerMismatchError("(tokenizer.bin)", 'vocabulary has no " " token');
    }
    out.push(space);
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      // run.c: a codepoint ends unless the next byte is a continuation byte (at most 4 bytes).
      const len = i + 1 - start;
      if (i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && len < 4) continue;
      const cp = bytes.subarray(start, i + 1);
      const id = this.#ids.get(bytesKey(cp));
      if (id !== undefined) out.push(id);
      else for (const b of cp) out.push(b + BYTE_FALLBACK_OFFSET);
      start = i + 1;
      // The next byte starts a new buffer whatever it is (run.c resets on non-continuation;
      // a 5th continuation byte also starts fresh because the buffer was just flushed).
    }
    return out;
  }

  /** Bytes of `id` after `prev`, as run.c's decode: no space after BOS, <0xXX> as a raw byte. */
  pieceBytes(prev: number, id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.pieces.length) {
      throw new InvalidTokenIdError(
        `token id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`,
      );
    }
    if (id === BOS_ID || id === EOS_ID) return EMPTY;
    const piece = this.#decodeBytes[id];
    if (prev === BOS_ID && piece.length > 0 && piece[0] === 0x20) return piece.subarray(1);
    return piece;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev = -1;
    for (const id of ids) {
      const p = this.pieceBytes(prev, id);
      parts.push(p);
      total += p.length;
      prev = id;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return new TextDecoder().decode(all);
  }

  streamDecoder(context: readonly number[] = []): StreamDecoder {
    let prev = context.length > 0 ? context[context.length - 1] : -1;
    const utf8 = new TextDecoder();
    return {
      push: (id: number) => {
        const bytes = this.pieceBytes(prev, id);
        prev = id;
        return utf8.decode(bytes, { stream: true });
      },
      flush: () => utf8.decode(),
    };
  }
}

const EMPTY = new Uint8Array(0);

/** "<0xAB>" pieces stand for the single byte 0xAB (run.c's sscanf "<0x%02hhX>"). */
function rawPieceBytes(piece: Uint8Array): Uint8Array {
  if (piece.length === 6 && bytesKey(piece.subarray(0, 3)) === "<0x" && piece[5] === 0x3e) {
    const hex = bytesKey(piece.subarray(3, 5));
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) return new Uint8Array([parseInt(hex, 16)]);
  }
  return piece;
}

/** Node of the token list that merging shrinks. */
interface Node {
  id: number;
  /** Position of the node's first initial token: list order, for leftmost-first ties. */
  pos: number;
  prev: Node | null;
  next: Node | null;
  alive: boolean;
}

/** A candidate merge of `left` and its right neighbour `right`. */
interface Candidate {
  left: Node;
  right: Node;
  leftId: number;
  rightId: number;
  merged: number;
  score: number;
}

/**
 * run.c's merge loop, "merge the best-scoring adjacent pair, leftmost on ties, until none is in
 * the vocabulary", done with a heap so that long texts take O(n log n) instead of O(n^2).
 */
function mergePairs(
  initial: number[],
  pieces: readonly Uint8Array[],
  scores: Float32Array,
  ids: Map<string, number>,
): number[] {
  if (initial.length < 2) return initial;
  const keys = pieces.map(bytesKey);
  const nodes: Node[] = initial.map((id, pos) => ({
    id,
    pos,
    prev: null,
    next: null,
    alive: true,
  }));
  for (let i = 0; i < nodes.length; i++) {
    nodes[i].prev = nodes[i - 1] ?? null;
    nodes[i].next = nodes[i + 1] ?? null;
  }
  const heap = new CandidateHeap();
  const consider = (left: Node | null) => {
    const right = left?.next;
    if (!left || !right) return;
    const merged = ids.get(keys[left.id] + keys[right.id]);
    if (merged === undefined || !(scores[merged] > MERGE_SCORE_FLOOR)) return;
    heap.push({ left, right, leftId: left.id, rightId: right.id, merged, score: scores[merged] });
  };
  for (const n of nodes) consider(n);
  for (let c = heap.pop(); c; c = heap.pop()) {
    const { left, right } = c;
    if (!left.alive || !right.alive || left.next !== right) continue;
    if (left.id !== c.leftId || right.id !== c.rightId) continue;
    left.id = c.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next) right.next.prev = left;
    consider(left.prev);
    consider(left);
  }
  const out: number[] = [];
  for (let n: Node | null = nodes[0]; n; n = n.next) out.push(n.id);
  return out;
}

/** Binary max-heap on (score, then smaller position first). */
class CandidateHeap {
  #items: Candidate[] = [];

  static #before(a: Candidate, b: Candidate): boolean {
    return a.score > b.score || (a.score === b.score && a.left.pos < b.left.pos);
  }

  push(c: Candidate): void {
    const items = this.#items;
    items.push(c);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!CandidateHeap.#before(items[i], items[parent])) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): Candidate | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && CandidateHeap.#before(items[l], items[best])) best = l;
        if (r < items.length && CandidateHeap.#before(items[r], items[best])) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best], items[i]];
        i = best;
      }
    }
    return top;
  }
}

/**
 * Parses tokenizer.bin. With `vocabSize` (the model's), exactly that many tokens must be there;
 * without it, tokens are read to the end of the file.
 */
export function parseTokenizerBin(
  bytes: Uint8Array,
  file: string,
  vocabSize?: number,
): Llama2cTokenizer {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) throw new TruncatedFileError(file, 4, bytes.byteLength, "the header");
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > MAX_PLAUSIBLE_TOKEN_LENGTH) {
    throw new CorruptHeaderError(
      file,
      `tokenizer.bin max_token_length = ${maxTokenLength} is not plausible ` +
        `(expected 1..${MAX_PLAUSIBLE_TOKEN_LENGTH})`,
    );
  }
  const pieces: Uint8Array[] = [];
  const scores: number[] = [];
  let at = 4;
  while (vocabSize === undefined ? at < bytes.byteLength : pieces.length < vocabSize) {
    const id = pieces.length;
    if (at + 8 > bytes.byteLength) {
      if (at === bytes.byteLength && vocabSize !== undefined) {
        throw new TokenizerMismatchError(
          file,
          `tokenizer.bin holds ${id} tokens but the model's vocabulary has ${vocabSize}`,
        );
      }
      throw new TruncatedFileError(file, at + 8, bytes.byteLength, `token ${id}'s record`);
    }
    const score = view.getFloat32(at, true);
    const len = view.getInt32(at + 4, true);
    if (!Number.isFinite(score)) {
      throw new CorruptHeaderError(
        file,
        `token ${id} (byte ${at}) has a non-finite score ${score}`,
      );
    }
    if (len < 0 || len > maxTokenLength) {
      throw new CorruptHeaderError(
        file,
        `token ${id} (byte ${at + 4}) has length ${len}, outside 0..max_token_length ` +
          `(${maxTokenLength})`,
      );
    }
    if (at + 8 + len > bytes.byteLength) {
      throw new TruncatedFileError(file, at + 8 + len, bytes.byteLength, `token ${id}'s record`);
    }
    pieces.push(bytes.slice(at + 8, at + 8 + len));
    scores.push(score);
    at += 8 + len;
  }
  if (at !== bytes.byteLength) {
    throw new TokenizerMismatchError(
      file,
      `tokenizer.bin goes on for ${bytes.byteLength - at} bytes after the model's ` +
        `${vocabSize} tokens: it belongs to a larger vocabulary`,
    );
  }
  if (pieces.length <= BYTE_FALLBACK_OFFSET + 255) {
    throw new TokenizerMismatchError(
      file,
      `tokenizer.bin has ${pieces.length} tokens; llama2.c needs at least 259 (<unk>, <s>, ` +
        "</s> and the 256 byte tokens)",
    );
  }
  checkByteTokens(pieces, file);
  return new Llama2cTokenizer(pieces, new Float32Array(scores), maxTokenLength);
}

/** Byte fallback relies on ids 3..258 being <0x00>..<0xFF>. */
function checkByteTokens(pieces: Uint8Array[], file: string): void {
  for (let b = 0; b < 256; b++) {
    const want = `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    const got = bytesKey(pieces[b + BYTE_FALLBACK_OFFSET]);
    if (got !== want) {
      throw new TokenizerMismatchError(
        file,
        `token ${b + BYTE_FALLBACK_OFFSET} is ${JSON.stringify(got)}, expected ${want} ` +
          "(llama2.c byte fallback layout)",
      );
    }
  }
}

/** Reads tokenizer.bin from a file, a URL or chosen files (see parseTokenizerBin). */
export async function readTokenizerBin(
  path: string,
  vocabSize?: number,
  store: FileStore = storeFor(path),
): Promise<Llama2cTokenizer> {
  const bytes = await readFileBytes(path, "tokenizer", store);
  return parseTokenizerBin(bytes, path, vocabSize);
}
