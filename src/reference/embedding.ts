/**
 * Float64 twin of shaders/embedding.wgsl. Token t uses ids[offset + t]; an id >= vocab is
 * clamped to vocab - 1, as on the GPU.
 */

/** The table row a token id reads: the id, clamped to the last row. */
export function embeddingRow(id: number, vocab: number): number {
  return Math.min(id, vocab - 1);
}

/** out[t, :] = table[clamp(ids[offset + t]), :] for t < tokens; table is [vocab, dim]. */
export function embeddingForward(
  table: ArrayLike<number>,
  vocab: number,
  dim: number,
  ids: ArrayLike<number>,
  tokens: number,
  offset = 0,
): Float64Array {
  const out = new Float64Array(tokens * dim);
  for (let t = 0; t < tokens; t++) {
    const row = embeddingRow(ids[offset + t], vocab);
    for (let c = 0; c < dim; c++) out[t * dim + c] = table[row * dim + c];
  }
  return out;
}

/** dTable[v, :] = sum of dOut[t, :] over the tokens t whose (clamped) id is v. */
export function embeddingBackward(
  dOut: ArrayLike<number>,
  vocab: number,
  dim: number,
  ids: ArrayLike<number>,
  tokens: number,
  offset = 0,
): Float64Array {
  const dTable = new Float64Array(vocab * dim);
  for (let t = 0; t < tokens; t++) {
    const row = embeddingRow(ids[offset + t], vocab);
    for (let c = 0; c < dim; c++) dTable[row * dim + c] += dOut[t * dim + c];
  }
  return dTable;
}
