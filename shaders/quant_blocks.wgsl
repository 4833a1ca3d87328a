// Decoding of GGUF quantized blocks, shared by the quant_* kernels: pull it in with
// `//!include "quant_blocks.wgsl"`. The including kernel declares
//   @group(0) @binding(N) var<storage, read> qweight: array<u32>;
// holding the blocks exactly as in the file (rows of cols / QK blocks, one row after another, the
// buffer's end padded to a whole word); QTYPE, declared here, is set by the wrapper to the ggml
// type id, so each pipeline holds one type's code. Blocks start at any byte (34-, 18-, 22- and 210-byte blocks
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

// The four bytes at byte offset `at` as a little-endian u32. Unaligned reads join two words
// without a branch (lanes of one SIMD group see blocks of both parities): the next word is
// shifted by 31 - s and then 1, so it drops out entirely when s = 0 (where it may lie past the
// buffer's end, a read WebGPU keeps in bounds).
fn q_word(at: u32) -> u32 {
  let w = at >> 2u;
  if (Q_ALIGNED) {
    return qweight[w];
  }
  let shift = (at & 3u) * 8u;
  return (qweight[w] >> shift) | ((qweight[w + 1u] << (31u - shift)) << 1u);
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
  if (Q_SMALL) {
    return q_small_codes(q_word(b + Q_QS + (e & 15u)), q_small_high(b), e);
  }
  var high = 0u;
  if (Q_HIGH) {
    high = q_word(q_high_at(b, e));
  }
  return q_wide_codes(q_word(q_low_at(b, e)), high, e);
}

// Q8_0 and the K-quants ("wide"): the low bits of values e .. e + 31 (e % 32 == 0) lie in 32
// consecutive bytes from q_low_at, and Q5_K's and Q6_K's high bits in 32 more from q_high_at, one
// byte per value either way, so q_dot32 loads them as two runs of eight words.
const Q_HIGH: bool = QTYPE == 13u || QTYPE == 14u;

fn q_low_at(b: u32, e: u32) -> u32 {
  if (QTYPE == 8u) {  // Q8_0: int8 q[32] at 2
    return b + 2u + e;
  }
  if (QTYPE == 12u || QTYPE == 13u) {  // Q4_K / Q5_K: sub-block s in qs[32 (s / 2) ..]
    return b + select(16u, 48u, QTYPE == 13u) + 32u * (e >> 6u) + (e & 31u);
  }
  return b + 64u * (e >> 7u) + (e & 63u);  // Q6_K: value 128 h + r in ql[64 h + r % 64]
}

fn q_high_at(b: u32, e: u32) -> u32 {
  if (QTYPE == 13u) {  // Q5_K: bit s of qh[l] for value 32 s + l
    return b + 16u + (e & 31u);
  }
  return b + 128u + 32u * (e >> 7u) + (e & 31u);  // Q6_K: value 128 h + r in qh[32 h + r % 32]
}

// Codes of wide values e .. e + 3 from the words at q_low_at and q_high_at.
fn q_wide_codes(low: u32, high: u32, e: u32) -> vec4<f32> {
  if (QTYPE == 8u) {
    return vec4<f32>(vec4<i32>(
      bitcast<i32>(low << 24u) >> 24u, bitcast<i32>(low << 16u) >> 24u,
      bitcast<i32>(low << 8u) >> 24u, bitcast<i32>(low) >> 24u));
  }
  if (QTYPE == 12u || QTYPE == 13u) {  // nibble by sub-block parity; Q5_K: qh bit s
    let s = e >> 5u;
    let q = q_nibbles(low, (s & 1u) * 4u);
    if (QTYPE == 12u) {
      return vec4<f32>(q);
    }
    return vec4<f32>(q | (q_bits(high, s) << vec4<u32>(4u)));
  }
  // Q6_K: nibble (r / 64) of ql, bits 2 (r / 32) of qh, for r = e % 128; centred on 32
  let r = e & 127u;
  let two = (vec4<u32>(high) >> (Q_BYTE_SHIFTS + vec4<u32>(2u * (r >> 5u)))) & vec4<u32>(3u);
  return vec4<f32>(q_nibbles(low, (r >> 6u) * 4u) | (two << vec4<u32>(4u))) - vec4<f32>(32.0);
}

// Eight consecutive words from byte `at` (any even offset).
struct QWords8 { a: vec4<u32>, b: vec4<u32> }

fn q_words8(at: u32) -> QWords8 {
  let w = at >> 2u;
  let a = vec4<u32>(qweight[w], qweight[w + 1u], qweight[w + 2u], qweight[w + 3u]);
  let b = vec4<u32>(qweight[w + 4u], qweight[w + 5u], qweight[w + 6u], qweight[w + 7u]);
  if (Q_ALIGNED) {
    return QWords8(a, b);
  }
  // As in q_word: each word joined with the next, which drops out when at is aligned.
  let shift = vec4<u32>((at & 3u) * 8u);
  let next_a = vec4<u32>(a.yzw, b.x);
  let next_b = vec4<u32>(b.yzw, qweight[w + 8u]);
  let up = vec4<u32>(31u) - shift;
  return QWords8(
    (a >> shift) | ((next_a << up) << vec4<u32>(1u)),
    (b >> shift) | ((next_b << up) << vec4<u32>(1u)),
  );
}

// The 32-value 4- and 5-bit types: values j and j + 16 (j < 16) share byte qs[j], low and high
// nibble; Q5_0 / Q5_1 keep value e's fifth bit in bit e of the u32 qh before qs.
const Q_SMALL: bool = QTYPE == 2u || QTYPE == 3u || QTYPE == 6u || QTYPE == 7u;
const Q_QS: u32 = select(select(select(2u, 4u, QTYPE == 3u), 6u, QTYPE == 6u), 8u, QTYPE == 7u);

// The qh word of a Q5_0 / Q5_1 block (zero for the 4-bit types).
fn q_small_high(b: u32) -> u32 {
  if (QTYPE == 6u || QTYPE == 7u) {
    return q_word(b + Q_QS - 4u);
  }
  return 0u;
}

// Codes of values e .. e + 3 (e % 4 == 0) from w = qs[e % 16 ..] and qh, centred where symmetric.
fn q_small_codes(w: u32, qh: u32, e: u32) -> vec4<f32> {
  let low = q_nibbles(w, (e >> 4u) * 4u);
  let high = (vec4<u32>(qh) >> (vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u);
  let q = vec4<f32>(low | (high << vec4<u32>(4u)));
  if (QTYPE == 2u) {
    return q - vec4<f32>(8.0);
  }
  if (QTYPE == 6u) {
    return q - vec4<f32>(16.0);
  }
  return q;
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

// Sum over values e .. e + 31 (e % 32 == 0) of the block at byte b times x0 .. x7 (four values
// each): codes are dotted first and each group's scale (and offset) applied once; the 32-value
// types read each qs word once for both of its nibbles. The matvec kernels dot K-quants by half
// blocks instead (q_dot_piece, below); decode_layer.wgsl dots them here, a sub-block at a time.
fn q_dot32(
  b: u32, e: u32,
  x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
  x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
) -> f32 {
  if (Q_HALF_ALIGNED) {
    return q_dot32_half_aligned(b, x0, x1, x2, x3, x4, x5, x6, x7);
  }
  var codes: f32;
  var second = 0.0;  // Q6_K: the codes of values e + 16 .. e + 31, under their own scale
  if (Q_SMALL) {
    let qh = q_small_high(b);
    let w0 = q_word(b + Q_QS);
    let w1 = q_word(b + Q_QS + 4u);
    let w2 = q_word(b + Q_QS + 8u);
    let w3 = q_word(b + Q_QS + 12u);
    codes = dot(q_small_codes(w0, qh, 0u), x0) + dot(q_small_codes(w1, qh, 4u), x1) +
      dot(q_small_codes(w2, qh, 8u), x2) + dot(q_small_codes(w3, qh, 12u), x3) +
      dot(q_small_codes(w0, qh, 16u), x4) + dot(q_small_codes(w1, qh, 20u), x5) +
      dot(q_small_codes(w2, qh, 24u), x6) + dot(q_small_codes(w3, qh, 28u), x7);
  } else {
    let low = q_words8(q_low_at(b, e));
    var high = QWords8(vec4<u32>(0u), vec4<u32>(0u));
    if (Q_HIGH) {
      high = q_words8(q_high_at(b, e));
    }
    codes = dot(q_wide_codes(low.a.x, high.a.x, e), x0) +
      dot(q_wide_codes(low.a.y, high.a.y, e + 4u), x1) +
      dot(q_wide_codes(low.a.z, high.a.z, e + 8u), x2) +
      dot(q_wide_codes(low.a.w, high.a.w, e + 12u), x3);
    second = dot(q_wide_codes(low.b.x, high.b.x, e + 16u), x4) +
      dot(q_wide_codes(low.b.y, high.b.y, e + 20u), x5) +
      dot(q_wide_codes(low.b.z, high.b.z, e + 24u), x6) +
      dot(q_wide_codes(low.b.w, high.b.w, e + 28u), x7);
    if (QTYPE == 14u) {
      return q_affine(b, e).x * codes + q_affine(b, e + 16u).x * second;
    }
    codes += second;
  }
  let ac = q_affine(b, e);
  if (Q_OFFSET) {
    return ac.x * codes + ac.y * dot(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7, vec4<f32>(1.0));
  }
  return ac.x * codes;
}

// Q4_0, Q5_0 and Q8_0 (18-, 22- and 34-byte blocks: an f16 scale, then whole words of qh / qs)
// start at an even byte, so a block lies in the Q_SPAN words from b / 4 whichever half of a word
// it starts in: q_dot32 reads those once each (no read joining two words) and takes the block's
// body words from them, shifted down a half word where the block starts at a word's start. The
// sums keep q_dot32's order for these types.
const Q_HALF_ALIGNED: bool = QTYPE == 2u || QTYPE == 6u || QTYPE == 8u;
const Q_SPAN: u32 = (QBYTES + 2u) / 4u;  // 5, 6, 9

// Body word i of a block (the 4 bytes at b + 2 + 4 i) from its span's words i and i + 1.
fn q_body(lo: u32, hi: u32, odd: bool) -> u32 {
  return select((lo >> 16u) | (hi << 16u), hi, odd);
}

// Span words 5 .. 8, read only by the types whose span reaches them.
fn q_span_word(w: u32, i: u32) -> u32 {
  if (Q_SPAN > i) {
    return qweight[w + i];
  }
  return 0u;
}

fn q_dot32_half_aligned(
  b: u32,
  x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
  x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
) -> f32 {
  let w = b >> 2u;
  let odd = (b & 2u) != 0u;  // the block starts in the high half of word w
  let s0 = qweight[w];
  let s1 = qweight[w + 1u];
  let s2 = qweight[w + 2u];
  let s3 = qweight[w + 3u];
  let s4 = qweight[w + 4u];
  let s5 = q_span_word(w, 5u);
  let halves = unpack2x16float(s0);
  let d = select(halves.x, halves.y, odd);
  if (QTYPE == 8u) {
    let s6 = q_span_word(w, 6u);
    let s7 = q_span_word(w, 7u);
    let s8 = q_span_word(w, 8u);
    let codes = dot(q_wide_codes(q_body(s0, s1, odd), 0u, 0u), x0) +
      dot(q_wide_codes(q_body(s1, s2, odd), 0u, 4u), x1) +
      dot(q_wide_codes(q_body(s2, s3, odd), 0u, 8u), x2) +
      dot(q_wide_codes(q_body(s3, s4, odd), 0u, 12u), x3);
    let second = dot(q_wide_codes(q_body(s4, s5, odd), 0u, 16u), x4) +
      dot(q_wide_codes(q_body(s5, s6, odd), 0u, 20u), x5) +
      dot(q_wide_codes(q_body(s6, s7, odd), 0u, 24u), x6) +
      dot(q_wide_codes(q_body(s7, s8, odd), 0u, 28u), x7);
    return d * (codes + second);
  }
  // Q4_0: qs = body words 0 .. 3; Q5_0: qh = body word 0, qs = body words 1 .. 4.
  var qh = 0u;
  var w0 = q_body(s0, s1, odd);
  var w1 = q_body(s1, s2, odd);
  var w2 = q_body(s2, s3, odd);
  var w3 = q_body(s3, s4, odd);
  if (QTYPE == 6u) {
    qh = w0;
    w0 = w1;
    w1 = w2;
    w2 = w3;
    w3 = q_body(s4, s5, odd);
  }
  let codes = dot(q_small_codes(w0, qh, 0u), x0) + dot(q_small_codes(w1, qh, 4u), x1) +
    dot(q_small_codes(w2, qh, 8u), x2) + dot(q_small_codes(w3, qh, 12u), x3) +
    dot(q_small_codes(w0, qh, 16u), x4) + dot(q_small_codes(w1, qh, 20u), x5) +
    dot(q_small_codes(w2, qh, 24u), x6) + dot(q_small_codes(w3, qh, 28u), x7);
  return d * codes;
}

// ---- pieces: what one invocation dots with one row at a time ----------------------------------
//
// The matvec kernels stride their invocations over a row's pieces of Q_PIECE values: a block of
// the 32-value types, half a block (128 values, four 32-value sub-blocks) of the K-quants, whose
// bytes for those values lie in a few runs of whole words (Q4_K: scale words and 16 words of qs;
// Q5_K: the same and 8 words of qh; Q6_K: 16 words of ql, 8 of qh, the half's 8 scales), so each
// word of a row is loaded once and each scale decoded once per sub-block. The caller loads a
// piece's x once (q_piece) and dots it with many rows' pieces (q_dot_piece).
const Q_PIECE: u32 = select(32u, 128u, QK == 256u);
const Q_PIECE4: u32 = Q_PIECE / 4u;

// 32 values of x, four a vec4.
struct QX8 {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

// A piece's x: 32 values in g0 (32-value types) or 128 in g0 .. g3, and for Q4_K / Q5_K each
// 32-value group's sum (the mins multiply it).
struct QPiece { g0: QX8, g1: QX8, g2: QX8, g3: QX8, sums: vec4<f32> }

fn q_sum8(g: QX8) -> f32 {
  return dot(g.v0 + g.v1 + g.v2 + g.v3 + g.v4 + g.v5 + g.v6 + g.v7, vec4<f32>(1.0));
}

// g1 .. g3 are zero (QX8()) for the 32-value types.
fn q_piece(g0: QX8, g1: QX8, g2: QX8, g3: QX8) -> QPiece {
  var sums = vec4<f32>(0.0);
  if (QTYPE == 12u || QTYPE == 13u) {
    sums = vec4<f32>(q_sum8(g0), q_sum8(g1), q_sum8(g2), q_sum8(g3));
  }
  return QPiece(g0, g1, g2, g3, sums);
}

// Sum over values e .. e + Q_PIECE - 1 (e % Q_PIECE == 0) of the block at byte b times the piece.
fn q_dot_piece(b: u32, e: u32, xs: QPiece) -> f32 {
  if (QTYPE == 12u || QTYPE == 13u) {
    return q_dot_k45(b, e >> 7u, xs);
  }
  if (QTYPE == 14u) {
    return q_dot_k6(b, e >> 7u, xs);
  }
  let g = xs.g0;
  return q_dot32(b, e, g.v0, g.v1, g.v2, g.v3, g.v4, g.v5, g.v6, g.v7);
}

fn q_unpack_bytes(w: u32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(w) >> Q_BYTE_SHIFTS) & vec4<u32>(255u));
}

// Codes of four values: nibble `shift` (0 or 4) of each byte of w, with Q5_K's fifth bits at
// bit `bit` of each byte of qh, put together on the whole word before its bytes are split.
fn q_k_codes(w: u32, shift: u32, qh: u32, bit: u32) -> vec4<f32> {
  var q = (w >> shift) & 0x0f0f0f0fu;
  if (QTYPE == 13u) {
    q |= ((qh >> bit) & 0x01010101u) << 4u;
  }
  return q_unpack_bytes(q);
}

// Dot of a 32-value group: codes of bytes qs0 .. qs7 (nibble `shift`), fifth bits at `bit` of
// qh0 .. qh7 (Q5_K), with g.
fn q_k_group(
  qs0: vec4<u32>, qs1: vec4<u32>, qh0: vec4<u32>, qh1: vec4<u32>, shift: u32, bit: u32, g: QX8,
) -> f32 {
  return dot(q_k_codes(qs0.x, shift, qh0.x, bit), g.v0) +
    dot(q_k_codes(qs0.y, shift, qh0.y, bit), g.v1) +
    dot(q_k_codes(qs0.z, shift, qh0.z, bit), g.v2) +
    dot(q_k_codes(qs0.w, shift, qh0.w, bit), g.v3) +
    dot(q_k_codes(qs1.x, shift, qh1.x, bit), g.v4) +
    dot(q_k_codes(qs1.y, shift, qh1.y, bit), g.v5) +
    dot(q_k_codes(qs1.z, shift, qh1.z, bit), g.v6) +
    dot(q_k_codes(qs1.w, shift, qh1.w, bit), g.v7);
}

// Q4_K / Q5_K, half h of the block at byte b (a word boundary: 144 and 176 are whole words).
// Sub-block 4h + j has qs bytes 64h + 32 (j / 2) + l (nibble j % 2), fifth bits at bit 4h + j
// of qh[l]; x = d sc q - dmin mn, summed as d (sc . codes) - dmin (mn . sums).
fn q_dot_k45(b: u32, h: u32, xs: QPiece) -> f32 {
  let w = b >> 2u;
  let dm = unpack2x16float(qweight[w]);
  let s0 = qweight[w + 1u];
  let s1 = qweight[w + 2u];
  let s2 = qweight[w + 3u];
  // The four sub-blocks' 6-bit scales and mins, a byte each (see q_affine for the layout).
  let high = h == 1u;
  let sc = select(s0 & 0x3f3f3f3fu, (s2 & 0x0f0f0f0fu) | ((s0 >> 2u) & 0x30303030u), high);
  let mn = select(s1 & 0x3f3f3f3fu, ((s2 >> 4u) & 0x0f0f0f0fu) | ((s1 >> 2u) & 0x30303030u), high);
  let qs = w + select(4u, 12u, QTYPE == 13u) + 16u * h;
  let a0 = vec4<u32>(qweight[qs], qweight[qs + 1u], qweight[qs + 2u], qweight[qs + 3u]);
  let a1 = vec4<u32>(qweight[qs + 4u], qweight[qs + 5u], qweight[qs + 6u], qweight[qs + 7u]);
  let b0 = vec4<u32>(qweight[qs + 8u], qweight[qs + 9u], qweight[qs + 10u], qweight[qs + 11u]);
  let b1 = vec4<u32>(qweight[qs + 12u], qweight[qs + 13u], qweight[qs + 14u], qweight[qs + 15u]);
  var h0 = vec4<u32>(0u);
  var h1 = vec4<u32>(0u);
  if (QTYPE == 13u) {
    h0 = vec4<u32>(qweight[w + 4u], qweight[w + 5u], qweight[w + 6u], qweight[w + 7u]);
    h1 = vec4<u32>(qweight[w + 8u], qweight[w + 9u], qweight[w + 10u], qweight[w + 11u]);
  }
  let bit = 4u * h;
  let codes = vec4<f32>(
    q_k_group(a0, a1, h0, h1, 0u, bit, xs.g0),
    q_k_group(a0, a1, h0, h1, 4u, bit + 1u, xs.g1),
    q_k_group(b0, b1, h0, h1, 0u, bit + 2u, xs.g2),
    q_k_group(b0, b1, h0, h1, 4u, bit + 3u, xs.g3),
  );
  return dm.x * dot(q_unpack_bytes(sc), codes) - dm.y * dot(q_unpack_bytes(mn), xs.sums);
}

// Codes of four Q6_K values, centred: nibble `shift` of each byte of ql with bits `bit`, `bit` + 1
// of each byte of qh above it, 6-bit codes c put together on the whole word; c ^ 32 read as a
// signed 6-bit number is c - 32.
fn q_k6_codes(ql: u32, shift: u32, qh: u32, bit: u32) -> vec4<f32> {
  let c = ((ql >> shift) & 0x0f0f0f0fu) | (((qh >> bit) & 0x03030303u) << 4u);
  let up = vec4<u32>(c ^ 0x20202020u) << vec4<u32>(26u, 18u, 10u, 2u);
  return vec4<f32>(bitcast<vec4<i32>>(up) >> vec4<u32>(26u));
}

// The two 16-value halves' dots of a Q6_K 32-value group.
fn q_k6_group(
  l0: vec4<u32>, l1: vec4<u32>, qh0: vec4<u32>, qh1: vec4<u32>, shift: u32, bit: u32, g: QX8,
) -> vec2<f32> {
  return vec2<f32>(
    dot(q_k6_codes(l0.x, shift, qh0.x, bit), g.v0) + dot(q_k6_codes(l0.y, shift, qh0.y, bit), g.v1) +
      dot(q_k6_codes(l0.z, shift, qh0.z, bit), g.v2) + dot(q_k6_codes(l0.w, shift, qh0.w, bit), g.v3),
    dot(q_k6_codes(l1.x, shift, qh1.x, bit), g.v4) + dot(q_k6_codes(l1.y, shift, qh1.y, bit), g.v5) +
      dot(q_k6_codes(l1.z, shift, qh1.z, bit), g.v6) + dot(q_k6_codes(l1.w, shift, qh1.w, bit), g.v7),
  );
}

// Q6_K, half h of the block at byte b (any even byte: 210-byte blocks alternate halves of a
// word). Value 128h + r: low bits in ql[64h + r % 64] (nibble r / 64), top two in
// qh[32h + r % 32] at bit 2 (r / 32), scale int8 sc[8h + r / 16]; x = d sc (q - 32).
fn q_dot_k6(b: u32, h: u32, xs: QPiece) -> f32 {
  let ql0 = q_words8(b + 64u * h);        // ql[64h ..]: r < 32 and, high nibbles, 64 <= r < 96
  let ql1 = q_words8(b + 64u * h + 32u);  // ql[64h + 32 ..]: 32 <= r < 64 and 96 <= r < 128
  let qh = q_words8(b + 128u + 32u * h);
  // The half's eight scales from the three words they lie in.
  let at = b + 192u + 8u * h;
  let w = at >> 2u;
  let odd = (at & 2u) != 0u;
  let t0 = qweight[w];
  let t1 = qweight[w + 1u];
  let t2 = qweight[w + 2u];
  let s0 = select(t0, (t0 >> 16u) | (t1 << 16u), odd);
  let s1 = select(t1, (t1 >> 16u) | (t2 << 16u), odd);
  let shifts = vec4<u32>(24u, 16u, 8u, 0u);
  let sc0 = vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(s0) << shifts) >> vec4<u32>(24u));
  let sc1 = vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(s1) << shifts) >> vec4<u32>(24u));
  let c0 = q_k6_group(ql0.a, ql0.b, qh.a, qh.b, 0u, 0u, xs.g0);
  let c1 = q_k6_group(ql1.a, ql1.b, qh.a, qh.b, 0u, 2u, xs.g1);
  let c2 = q_k6_group(ql0.a, ql0.b, qh.a, qh.b, 4u, 4u, xs.g2);
  let c3 = q_k6_group(ql1.a, ql1.b, qh.a, qh.b, 4u, 6u, xs.g3);
  return q_half(b + 208u) * (dot(sc0, vec4<f32>(c0, c1)) + dot(sc1, vec4<f32>(c2, c3)));
}

// Byte offset of the block holding value `col` of row `row`, for rows of `row_bytes` bytes.
fn q_block_at(row: u32, col: u32, row_bytes: u32) -> u32 {
  return row * row_bytes + (col / QK) * QBYTES;
}
