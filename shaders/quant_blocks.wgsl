// Decoding of GGUF quantized blocks, shared by the quant_* kernels: their wrappers append this file
// to the kernel's own source. The kernel declares
//   @group(0) @binding(N) var<storage, read> qweight: array<u32>;
// holding the blocks exactly as in the file (rows of cols / QK blocks, one row after another, the
// buffer's end padded to a whole word), and the wrapper sets QTYPE to the ggml type id, so each
// pipeline holds one type's code. Blocks start at any byte (34-, 18-, 22- and 210-byte blocks
// straddle words), so reads go through q_word, which joins two words when it must.
//
// A value is x = a * code + c, with an integer code and the pair (a, c) of the group of values
// that shares a scale (32 values; 16 in Q6_K). The symmetric types' codes come centred (Q4_0
// q - 8, Q5_0 q - 16, Q6_K q - 32) and their c is 0, so no sum cancels a large offset; only
// Q4_1, Q5_1, Q4_K and Q5_K have one (Q_OFFSET). See src/reference/quant.ts for the layouts.
// Scales are f16 read with unpack2x16float (core WGSL: no shader-f16 needed).

override QTYPE: u32 = 8u;  // 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K, 13 Q5_K, 14 Q6_K

const QK: u32 = select(32u, 256u, QTYPE >= 12u);  // values per block
const QBYTES: u32 = select(select(select(select(select(select(select(
  34u, 18u, QTYPE == 2u), 20u, QTYPE == 3u), 22u, QTYPE == 6u), 24u, QTYPE == 7u),
  144u, QTYPE == 12u), 176u, QTYPE == 13u), 210u, QTYPE == 14u);  // bytes per block
// Types whose block size is a multiple of 4, so every block starts on a word.
const Q_ALIGNED: bool = QBYTES % 4u == 0u;
// Types with a per-group offset c (a min), which dot products add separately.
const Q_OFFSET: bool = QTYPE == 3u || QTYPE == 7u || QTYPE == 12u || QTYPE == 13u;

const Q_BYTE_SHIFTS = vec4<u32>(0u, 8u, 16u, 24u);

// The four bytes at byte offset `at` as a little-endian u32.
fn q_word(at: u32) -> u32 {
  let w = at >> 2u;
  let shift = (at & 3u) * 8u;
  if (Q_ALIGNED || shift == 0u) {
    return qweight[w];
  }
  return (qweight[w] >> shift) | (qweight[w + 1u] << (32u - shift));
}

fn q_byte(at: u32) -> u32 {
  return (qweight[at >> 2u] >> ((at & 3u) * 8u)) & 255u;
}

// The f16 at an even byte offset.
fn q_half(at: u32) -> f32 {
  return unpack2x16float(qweight[at >> 2u] >> ((at & 2u) * 8u)).x;
}

// The nibbles at bit `shift` (0 or 4) of each byte of a word.
fn q_nibbles(w: u32, shift: u32) -> vec4<u32> {
  return (vec4<u32>(w) >> (Q_BYTE_SHIFTS + vec4<u32>(shift))) & vec4<u32>(15u);
}

// Bit `k` of each byte of a word.
fn q_bits(w: u32, k: u32) -> vec4<u32> {
  return (vec4<u32>(w) >> (Q_BYTE_SHIFTS + vec4<u32>(k))) & vec4<u32>(1u);
}

// Codes of values e .. e + 3 (e % 4 == 0) of the block at byte b (centred where symmetric).
fn q_codes4(b: u32, e: u32) -> vec4<f32> {
  if (QTYPE == 8u) {  // Q8_0: int8 q[32] at 2
    let w = q_word(b + 2u + e);
    return vec4<f32>(vec4<i32>(
      bitcast<i32>(w << 24u) >> 24u, bitcast<i32>(w << 16u) >> 24u,
      bitcast<i32>(w << 8u) >> 24u, bitcast<i32>(w) >> 24u));
  }
  if (QTYPE == 2u || QTYPE == 3u) {  // Q4_0 / Q4_1: value j and j + 16 share qs[j]
    let qs = select(2u, 4u, QTYPE == 3u);
    let q = vec4<f32>(q_nibbles(q_word(b + qs + (e & 15u)), (e >> 4u) * 4u));
    return select(q - vec4<f32>(8.0), q, QTYPE == 3u);
  }
  if (QTYPE == 6u || QTYPE == 7u) {  // Q5_0 / Q5_1: bit e of qh is value e's fifth bit
    let qh = select(2u, 4u, QTYPE == 7u);
    let high = (vec4<u32>(q_word(b + qh)) >> (vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u);
    let low = q_nibbles(q_word(b + qh + 4u + (e & 15u)), (e >> 4u) * 4u);
    let q = vec4<f32>(low | (high << vec4<u32>(4u)));
    return select(q - vec4<f32>(16.0), q, QTYPE == 7u);
  }
  if (QTYPE == 12u || QTYPE == 13u) {  // Q4_K / Q5_K: sub-block s in qs[32 (s / 2) ..]
    let s = e >> 5u;
    let qs = select(16u, 48u, QTYPE == 13u);
    let low = q_nibbles(q_word(b + qs + 32u * (s >> 1u) + (e & 31u)), (s & 1u) * 4u);
    if (QTYPE == 12u) {
      return vec4<f32>(low);
    }
    let high = q_bits(q_word(b + 16u + (e & 31u)), s);
    return vec4<f32>(low | (high << vec4<u32>(4u)));
  }
  // Q6_K: value 128 h + r: ql[64 h + r % 64] nibble r / 64, qh[32 h + r % 32] bits 2 (r / 32)
  let h = e >> 7u;
  let r = e & 127u;
  let low = q_nibbles(q_word(b + 64u * h + (r & 63u)), (r >> 6u) * 4u);
  let high = (vec4<u32>(q_word(b + 128u + 32u * h + (r & 31u))) >>
    (Q_BYTE_SHIFTS + vec4<u32>(2u * (r >> 5u)))) & vec4<u32>(3u);
  return vec4<f32>(low | (high << vec4<u32>(4u))) - vec4<f32>(32.0);
}

// (a, c) with x = a * code + c for the group holding value e of the block at byte b.
fn q_affine(b: u32, e: u32) -> vec2<f32> {
  if (QTYPE == 12u || QTYPE == 13u) {
    // Eight 6-bit scales and mins in 12 bytes: sub-block s < 4 has scale = byte s, min = byte
    // s + 4 (low 6 bits); s >= 4 has the nibbles of byte s + 4 and the top two bits of bytes
    // s - 4 (scale) and s (min) as its high bits.
    let dm = unpack2x16float(qweight[b >> 2u]);
    let s = e >> 5u;
    let shift = (s & 3u) * 8u;
    let b0 = (qweight[(b >> 2u) + 1u] >> shift) & 255u;
    let b1 = (qweight[(b >> 2u) + 2u] >> shift) & 255u;
    let b2 = (qweight[(b >> 2u) + 3u] >> shift) & 255u;
    let scale = select(b0 & 63u, (b2 & 15u) | ((b0 >> 6u) << 4u), s >= 4u);
    let minimum = select(b1 & 63u, (b2 >> 4u) | ((b1 >> 6u) << 4u), s >= 4u);
    return vec2<f32>(dm.x * f32(scale), -dm.y * f32(minimum));
  }
  if (QTYPE == 14u) {
    let scale = bitcast<i32>(q_byte(b + 192u + (e >> 4u)) << 24u) >> 24u;
    return vec2<f32>(q_half(b + 208u) * f32(scale), 0.0);
  }
  let d = q_half(b);
  if (QTYPE == 3u || QTYPE == 7u) {  // Q4_1, Q5_1: x = d q + m
    return vec2<f32>(d, q_half(b + 2u));
  }
  return vec2<f32>(d, 0.0);  // Q8_0, Q4_0, Q5_0
}

// Values e .. e + 3 (e % 4 == 0) of the block at byte b.
fn q_values4(b: u32, e: u32) -> vec4<f32> {
  let ac = q_affine(b, e);
  if (Q_OFFSET) {
    return fma(q_codes4(b, e), vec4<f32>(ac.x), vec4<f32>(ac.y));
  }
  return q_codes4(b, e) * ac.x;
}

// Sum over values e .. e + 15 (e % 16 == 0) of the block at byte b times x0 .. x3 (four values
// each): the codes are dotted first and the group's scale (and offset) applied once.
fn q_dot16(b: u32, e: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
  let ac = q_affine(b, e);
  let codes = dot(q_codes4(b, e), x0) + dot(q_codes4(b, e + 4u), x1) +
    dot(q_codes4(b, e + 8u), x2) + dot(q_codes4(b, e + 12u), x3);
  if (Q_OFFSET) {
    return ac.x * codes + ac.y * dot(x0 + x1 + x2 + x3, vec4<f32>(1.0));
  }
  return ac.x * codes;
}

// Byte offset of the block holding value `col` of row `row`, for rows of `row_bytes` bytes.
fn q_block_at(row: u32, col: u32, row_bytes: u32) -> u32 {
  return row * row_bytes + (col / QK) * QBYTES;
}
