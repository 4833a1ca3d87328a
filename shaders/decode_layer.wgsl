// One decoder layer for one token in one workgroup, for models small enough that a layer's
// values fit workgroup memory (stories260K): RMSNorm, q/k/v (+ biases, + adapter), RoPE, the KV
// cache append, attention over the cache, o and the residual, RMSNorm, gate/up (+ adapter),
// SwiGLU, down and the residual, with workgroup barriers between the stages instead of
// dispatches. The layer's weights are one buffer (src/model/gpu_weights.ts's packed layer), bound
// as u32 words (qweight: GGUF blocks, the f32 norms and biases) and as the matrices' own kind
// (weight: f32 vec4s; weight16: f16 pairs).
//
// Each product row is one invocation's: it sums the row the way matvec.wgsl / quant_matvec.wgsl
// would with MV_LANES invocations (lane l takes vec4s l, l + MV_LANES, ...; then the same tree),
// and the norms take rmsnorm.wgsl's order (NORM_LANES lanes, its tree), so the products are the
// unfused and fused kernels' sums in their order (llvmpipe may still fuse an fma in one kernel and
// not in another: float32 rounding). (On llvmpipe this measured faster than all invocations
// sharing each row: the tree's barriers cost more than the rows' scattered loads.) Attention
// gives each invocation one head and walks the keys with an online softmax (its own order:
// float32 rounding apart from attention.wgsl).
//
// The KV cache is bound as u32 words: f32 values, or with KV_F16 f16 pairs (element 2i in the
// low half), which the append writes a word (two elements) per invocation.
//
// Flags are plain `if (FLAG ...)` conditions, folded before compiling (foldConstantBranches), so a
// variant binds only the buffers it reads.

override WG: u32 = 8;         // invocations
override MV_LANES: u32 = 8;   // the unfused matvec's invocations, a power of two
override DIM: u32 = 64;       // model width
override QDIM: u32 = 64;      // nHeads * headDim
override KVDIM: u32 = 32;     // nKvHeads * headDim
override HIDDEN: u32 = 172;   // MLP width
override HD: u32 = 8;         // head size (even)
override NH: u32 = 8;         // query heads
override NKV: u32 = 4;        // key/value heads
override WTYPE: u32 = 0u;     // 0 f32, 1 f16, 2 GGUF blocks (QTYPE)
override BIAS: bool = false;
override LORA: bool = false;
override ROPE: bool = true;
override INTERLEAVED: bool = true;
override NORM_LANES: u32 = 64; // rmsnorm.wgsl's invocations, a power of two
override MAX_RANK: u32 = 64;
override KV_F16: bool = false;
override REG_K4: u32 = 0u;    // > 0: f32 products read their input from this many vec4 registers
override ARGMAX: bool = false; // head: also write the argmax of the logits
override EMBED: bool = false;  // the layer's input is the embedding table's row of tokens[tokenAt]

const DIM4: u32 = DIM / 4u;
const QDIM4: u32 = QDIM / 4u;
const HIDDEN4: u32 = HIDDEN / 4u;
const MAXK4: u32 = max(max(DIM4, QDIM4), HIDDEN4);
const QKV: u32 = QDIM + 2u * KVDIM;
const GROUP: u32 = NH / NKV;
const REGS: u32 = max(REG_K4, 1u);

//!include "quant_blocks.wgsl"
//!include "rope_angles.wgsl"
//!include "sigmoid.wgsl"
//!include "order_key.wgsl"

// Byte offsets in the layer buffer: the norms, the q bias (k's and v's at biasK, biasV more
// floats), the matrices. kRow, vRow: where this token's key and value go in kv; vBase: where the
// values start. aAt_t, bAt_t: floats from the adapter binding's start to target t's A and B.
// The head (entry point `head`): attnNormAt is the final norm's byte offset in qweight, headAt
// the head matrix's in weight / weight16; vocab its rows; tokenAt the slot ARGMAX writes. EMBED
// (a first layer): tokenAt the slot of the token, vocab the table's rows (an id past them reads
// the last, as embedding.wgsl does), embedAt the table's first vec4 in embed.
struct Params {
  eps: f32, scale: f32, pos: u32, keys: u32,
  kRow: u32, vRow: u32, vBase: u32,
  attnNormAt: u32, ffnNormAt: u32, biasAt: u32, biasK: u32, biasV: u32,
  qAt: u32, kAt: u32, vAt: u32, oAt: u32, gateAt: u32, upAt: u32, downAt: u32,
  rank: u32, loraScale: f32,
  aQ: u32, aK: u32, aV: u32, aO: u32, aGate: u32, aUp: u32, aDown: u32,
  bQ: u32, bK: u32, bV: u32, bO: u32, bGate: u32, bUp: u32, bDown: u32,
  headAt: u32, vocab: u32, tokenAt: u32, embedAt: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;       // [DIM] the residual stream
@group(0) @binding(2) var<storage, read> qweight: array<u32>;        // the layer's weights
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;   // the same buffer (f32)
@group(0) @binding(7) var<storage, read> weight16: array<vec2<u32>>; // the same buffer (f16)
@group(0) @binding(4) var<storage, read_write> kv: array<u32>;      // the layer's KV cache (f32 or f16 pairs)
@group(0) @binding(5) var<storage, read> freqs: array<vec4<f32>>;   // RoPE frequencies
@group(0) @binding(6) var<storage, read> adapter: array<vec4<f32>>; // flat LoRA parameters
@group(0) @binding(8) var<storage, read_write> logits: array<f32>;  // head: [vocab]
@group(0) @binding(9) var<storage, read_write> tokens: array<u32>;  // the token history (head, EMBED)
@group(0) @binding(10) var<storage, read> embed: array<vec4<f32>>;  // EMBED: [vocab, DIM] f32 table

var<workgroup> vin: array<vec4<f32>, MAXK4>;  // the input of the product at hand
var<workgroup> xs: array<f32, DIM>;            // the residual entering the layer
var<workgroup> x2: array<f32, DIM>;            // ... after attention
var<workgroup> qkv: array<f32, QKV>;           // q, k, v before RoPE
var<workgroup> qr: array<f32, QDIM>;           // q after RoPE
var<workgroup> ao: array<f32, QDIM>;           // attention output
var<workgroup> gu: array<f32, 2u * HIDDEN>;    // gate, then up
var<workgroup> norm_lanes: array<f32, NORM_LANES>;
var<workgroup> lh: array<f32, 3u * MAX_RANK>;  // LoRA h of the stage's targets
var<workgroup> best_lanes: array<vec2<u32>, WG>; // head: each invocation's (key, row) of its best

// Element i of the KV cache.
fn kv_at(i: u32) -> f32 {
  if (KV_F16) {
    return unpack2x16float(kv[i >> 1u])[i & 1u];
  }
  return bitcast<f32>(kv[i]);
}

fn f32_at(byte: u32) -> f32 {
  return bitcast<f32>(qweight[byte >> 2u]);
}

fn f32x4_at(byte: u32) -> vec4<f32> {
  let w = byte >> 2u;
  return bitcast<vec4<f32>>(vec4<u32>(qweight[w], qweight[w + 1u], qweight[w + 2u], qweight[w + 3u]));
}

// vin normalised in place: vin * rstd * w, w the norm at byte `at`, rstd in rmsnorm's order.
fn normalise(at: u32, lid: u32) {
  for (var j = lid; j < NORM_LANES; j += WG) {
    var squares = 0.0;
    for (var c = j; c < DIM4; c += NORM_LANES) {
      let v = vin[c];
      squares += dot(v, v);
    }
    norm_lanes[j] = squares;
  }
  workgroupBarrier();
  for (var width = NORM_LANES / 2u; width > 0u; width >>= 1u) {
    for (var j = lid; j < width; j += WG) {
      norm_lanes[j] = norm_lanes[j] + norm_lanes[j + width];
    }
    workgroupBarrier();
  }
  let r = inverseSqrt(norm_lanes[0] / f32(DIM) + params.eps);
  for (var c = lid; c < DIM4; c += WG) {
    vin[c] = vin[c] * r * f32x4_at(at + 16u * c);
  }
  workgroupBarrier();
}

// vin's first k4 vec4s in registers, for the f32 products (REG_K4 > 0). On llvmpipe every read of
// workgroup memory is a gather, one address an invocation, even when all read the same element;
// copied once a stage, the rows' inner loops read registers instead (their loops unrolled, so
// every index is a constant).
fn input_registers(k4: u32) -> array<vec4<f32>, REGS> {
  var xr = array<vec4<f32>, REGS>();
  if (REG_K4 > 0u) {
    //!unroll
    for (var k = 0u; k < REGS; k++) {
      if (k < k4) { xr[k] = vin[k]; }
    }
  }
  return xr;
}

// Row `row` of the matrix at byte `at` (K = 4 k4 values a row) dotted with vin (or its copy xr),
// summed as MV_LANES invocations of matvec.wgsl or quant_matvec.wgsl would.
fn row_dot(at: u32, row: u32, k4: u32, xr: array<vec4<f32>, REGS>) -> f32 {
  var lanes = array<f32, MV_LANES>();
  if (WTYPE == 0u && MV_LANES == 8u && REG_K4 > 0u) {
    // The eight-lane path below, with the input in registers: lane k % 8 takes vec4 k.
    let base = (at >> 4u) + row * k4;
    var acc = array<vec4<f32>, 8>();
    //!unroll
    for (var k = 0u; k < REGS; k++) {
      if (k < k4) { acc[k % 8u] = fma(weight[base + k], xr[k], acc[k % 8u]); }
    }
    var s = array<f32, 8>();
    //!unroll
    for (var l = 0u; l < 8u; l++) {
      s[l] = acc[l].x + acc[l].y + acc[l].z + acc[l].w;
    }
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  } else if (WTYPE == 2u) {
    let base = at + row * (4u * k4 / QK) * QBYTES;
    let pieces = k4 / 8u;
    for (var l = 0u; l < MV_LANES; l++) {
      var acc = 0.0;
      for (var p = l; p < pieces; p += MV_LANES) {
        let col = 32u * p;
        acc += q_dot32(base + (col / QK) * QBYTES, col % QK, vin[8u * p], vin[8u * p + 1u],
          vin[8u * p + 2u], vin[8u * p + 3u], vin[8u * p + 4u], vin[8u * p + 5u],
          vin[8u * p + 6u], vin[8u * p + 7u]);
      }
      lanes[l] = acc;
    }
  } else if (WTYPE == 1u) {
    let base = (at >> 3u) + row * k4;
    for (var l = 0u; l < MV_LANES; l++) {
      var acc = vec4<f32>(0.0);
      for (var k = l; k < k4; k += MV_LANES) {
        let packed = weight16[base + k];
        acc = fma(vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y)), vin[k], acc);
      }
      lanes[l] = acc.x + acc.y + acc.z + acc.w;
    }
  } else if (MV_LANES == 8u) {
    // The same sums with the eight lanes in named registers (an indexed array lives in memory on
    // llvmpipe, which is where eight lanes are the matvec's).
    let base = (at >> 4u) + row * k4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var k = 0u;
    for (; k + 8u <= k4; k += 8u) {
      a0 = fma(weight[base + k], vin[k], a0);
      a1 = fma(weight[base + k + 1u], vin[k + 1u], a1);
      a2 = fma(weight[base + k + 2u], vin[k + 2u], a2);
      a3 = fma(weight[base + k + 3u], vin[k + 3u], a3);
      a4 = fma(weight[base + k + 4u], vin[k + 4u], a4);
      a5 = fma(weight[base + k + 5u], vin[k + 5u], a5);
      a6 = fma(weight[base + k + 6u], vin[k + 6u], a6);
      a7 = fma(weight[base + k + 7u], vin[k + 7u], a7);
    }
    if (k < k4) { a0 = fma(weight[base + k], vin[k], a0); }
    if (k + 1u < k4) { a1 = fma(weight[base + k + 1u], vin[k + 1u], a1); }
    if (k + 2u < k4) { a2 = fma(weight[base + k + 2u], vin[k + 2u], a2); }
    if (k + 3u < k4) { a3 = fma(weight[base + k + 3u], vin[k + 3u], a3); }
    if (k + 4u < k4) { a4 = fma(weight[base + k + 4u], vin[k + 4u], a4); }
    if (k + 5u < k4) { a5 = fma(weight[base + k + 5u], vin[k + 5u], a5); }
    if (k + 6u < k4) { a6 = fma(weight[base + k + 6u], vin[k + 6u], a6); }
    let s = array<f32, 7>(
      a0.x + a0.y + a0.z + a0.w, a1.x + a1.y + a1.z + a1.w, a2.x + a2.y + a2.z + a2.w,
      a3.x + a3.y + a3.z + a3.w, a4.x + a4.y + a4.z + a4.w, a5.x + a5.y + a5.z + a5.w,
      a6.x + a6.y + a6.z + a6.w,
    );
    let s7 = a7.x + a7.y + a7.z + a7.w;
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s7));
  } else {
    let base = (at >> 4u) + row * k4;
    for (var l = 0u; l < MV_LANES; l++) {
      var acc = vec4<f32>(0.0);
      for (var k = l; k < k4; k += MV_LANES) {
        acc = fma(weight[base + k], vin[k], acc);
      }
      lanes[l] = acc.x + acc.y + acc.z + acc.w;
    }
  }
  for (var width = MV_LANES / 2u; width > 0u; width >>= 1u) {
    for (var i = 0u; i < width; i++) {
      lanes[i] = lanes[i] + lanes[i + width];
    }
  }
  return lanes[0];
}

// ---- LoRA ------------------------------------------------------------------------------------

fn adapter_at(i: u32) -> f32 {
  return adapter[i >> 2u][i & 3u];
}

// lh[j * rank + r] = row r of A_j · vin, for the n targets whose A start at floats a0, a1, a2.
fn lora_h(n: u32, a0: u32, a1: u32, a2: u32, k4: u32, lid: u32) {
  for (var i = lid; i < n * params.rank; i += WG) {
    let j = i / params.rank;
    let a = select(select(a0, a1, j == 1u), a2, j == 2u) / 4u + (i % params.rank) * k4;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < k4; k++) {
      acc = fma(adapter[a + k], vin[k], acc);
    }
    lh[i] = acc.x + acc.y + acc.z + acc.w;
  }
  workgroupBarrier();
}

// scale · h_j·B[row] for the stage's target j, whose B starts at float b.
fn lora_delta(j: u32, b: u32, row: u32) -> f32 {
  var sum = 0.0;
  for (var r = 0u; r < params.rank; r++) {
    sum = fma(lh[j * params.rank + r], adapter_at(b + row * params.rank + r), sum);
  }
  return params.loraScale * sum;
}

// ---- the layer ---------------------------------------------------------------------------------

// Element e of q, k, v (qkv) after RoPE: q and k rotated when ROPE, v as it is.
fn roped(e: u32) -> f32 {
  var v = qkv[e];
  if (ROPE && e < QDIM + KVDIM) {
    let d = e % HD;
    var i = d / 2u;
    var first = e - (d % 2u);
    var second = first + 1u;
    var member = d % 2u;
    if (!INTERLEAVED) {
      i = d % (HD / 2u);
      member = d / (HD / 2u);
      first = e - member * (HD / 2u);
      second = first + HD / 2u;
    }
    let cs = cos_sin(params.pos, i);
    let a = qkv[first];
    let b = qkv[second];
    v = select(a * cs.y + b * cs.x, a * cs.x - b * cs.y, member == 0u);
  }
  return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  // Attention's input: the residual (or the token's embedding), normalised.
  var row = 0u;
  if (EMBED) {
    row = params.embedAt + min(tokens[params.tokenAt], params.vocab - 1u) * DIM4;
  }
  for (var c = lid; c < DIM4; c += WG) {
    var v = vec4<f32>(0.0);
    if (EMBED) {
      v = embed[row + c];
    } else {
      v = vec4<f32>(x[4u * c], x[4u * c + 1u], x[4u * c + 2u], x[4u * c + 3u]);
    }
    vin[c] = v;
    xs[4u * c] = v.x;
    xs[4u * c + 1u] = v.y;
    xs[4u * c + 2u] = v.z;
    xs[4u * c + 3u] = v.w;
  }
  workgroupBarrier();
  normalise(params.attnNormAt, lid);
  let xqkv = input_registers(DIM4);
  if (LORA) {
    lora_h(3u, params.aQ, params.aK, params.aV, DIM4, lid);
  }
  for (var r = lid; r < QKV; r += WG) {
    let part = select(select(0u, 1u, r >= QDIM), 2u, r >= QDIM + KVDIM);
    let row = r - select(select(0u, QDIM, r >= QDIM), QDIM + KVDIM, r >= QDIM + KVDIM);
    var v = row_dot(select(select(params.qAt, params.kAt, part == 1u), params.vAt, part == 2u), row, DIM4, xqkv);
    if (BIAS) {
      let b = select(select(0u, params.biasK, part == 1u), params.biasV, part == 2u);
      v += f32_at(params.biasAt + 4u * (b + row));
    }
    if (LORA) {
      v += lora_delta(part, select(select(params.bQ, params.bK, part == 1u), params.bV, part == 2u), row);
    }
    qkv[r] = v;
  }
  workgroupBarrier();
  // RoPE on q and k; q stays here, k and v go to the cache.
  if (KV_F16) {
    for (var e = lid; e < QDIM; e += WG) {
      qr[e] = roped(e);
    }
    // Word w holds k (or v) elements 2w and 2w + 1.
    for (var w = lid; w < KVDIM; w += WG) {
      let e = QDIM + 2u * w;
      let word = pack2x16float(vec2<f32>(roped(e), roped(e + 1u)));
      if (w < KVDIM / 2u) {
        kv[params.kRow / 2u + w] = word;
      } else {
        kv[params.vRow / 2u + w - KVDIM / 2u] = word;
      }
    }
  } else {
    for (var e = lid; e < QKV; e += WG) {
      let v = roped(e);
      if (e < QDIM) {
        qr[e] = v;
      } else if (e < QDIM + KVDIM) {
        kv[params.kRow + e - QDIM] = bitcast<u32>(v);
      } else {
        kv[params.vRow + e - QDIM - KVDIM] = bitcast<u32>(v);
      }
    }
  }
  storageBarrier();
  workgroupBarrier();
  // Attention: one head an invocation, an online softmax over the keys.
  for (var h = lid; h < NH; h += WG) {
    let g = h / GROUP;
    var q: array<f32, HD>;
    var acc: array<f32, HD>;
    //!unroll for (var d = 0u; d < HD; d++) {
      q[d] = qr[h * HD + d] * params.scale;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j = 0u; j < params.keys; j++) {
      let kb = j * KVDIM + g * HD;
      var s = 0.0;
      //!unroll for (var d = 0u; d < HD; d++) {
        s = fma(q[d], kv_at(kb + d), s);
      }
      let mNew = max(m, s);
      let correction = exp(m - mNew);
      let p = exp(s - mNew);
      l = l * correction + p;
      let vb = params.vBase + kb;
      //!unroll for (var d = 0u; d < HD; d++) {
        acc[d] = fma(p, kv_at(vb + d), acc[d] * correction);
      }
      m = mNew;
    }
    //!unroll for (var d = 0u; d < HD; d++) {
      ao[h * HD + d] = acc[d] / l;
    }
  }
  workgroupBarrier();
  // o and the residual.
  for (var c = lid; c < QDIM4; c += WG) {
    vin[c] = vec4<f32>(ao[4u * c], ao[4u * c + 1u], ao[4u * c + 2u], ao[4u * c + 3u]);
  }
  workgroupBarrier();
  let xo = input_registers(QDIM4);
  if (LORA) {
    lora_h(1u, params.aO, 0u, 0u, QDIM4, lid);
  }
  for (var r = lid; r < DIM; r += WG) {
    var v = row_dot(params.oAt, r, QDIM4, xo);
    if (LORA) {
      v += lora_delta(0u, params.bO, r);
    }
    x2[r] = xs[r] + v;
  }
  workgroupBarrier();
  // The MLP's input: the residual, normalised.
  for (var c = lid; c < DIM4; c += WG) {
    vin[c] = vec4<f32>(x2[4u * c], x2[4u * c + 1u], x2[4u * c + 2u], x2[4u * c + 3u]);
  }
  workgroupBarrier();
  normalise(params.ffnNormAt, lid);
  let xgu = input_registers(DIM4);
  if (LORA) {
    lora_h(2u, params.aGate, params.aUp, 0u, DIM4, lid);
  }
  for (var r = lid; r < 2u * HIDDEN; r += WG) {
    let up = r >= HIDDEN;
    let row = r - select(0u, HIDDEN, up);
    var v = row_dot(select(params.gateAt, params.upAt, up), row, DIM4, xgu);
    if (LORA) {
      v += lora_delta(select(0u, 1u, up), select(params.bGate, params.bUp, up), row);
    }
    gu[r] = v;
  }
  workgroupBarrier();
  for (var c = lid; c < HIDDEN4; c += WG) {
    var a: vec4<f32>;
    //!unroll for (var i = 0u; i < 4u; i++) {
      let gate = gu[4u * c + i];
      a[i] = gate * sigmoids(vec4<f32>(gate)).pos.x * gu[HIDDEN + 4u * c + i];
    }
    vin[c] = a;
  }
  workgroupBarrier();
  let xd = input_registers(HIDDEN4);
  if (LORA) {
    lora_h(1u, params.aDown, 0u, 0u, HIDDEN4, lid);
  }
  for (var r = lid; r < DIM; r += WG) {
    var v = row_dot(params.downAt, r, HIDDEN4, xd);
    if (LORA) {
      v += lora_delta(0u, params.bDown, r);
    }
    x[r] = x2[r] + v;
  }
}

// ---- the LM head -------------------------------------------------------------------------------

// The head for one token, in the same workgroup shape: logits = (x normalised with the final
// norm) · Wᵀ, row r of the head matrix W (weight or weight16, DIM wide) giving logits[r], summed
// in the fused head kernel's order (float32 rounding apart: llvmpipe fuses a multiply-add or not
// as the code around it goes). With ARGMAX it also writes tokens[tokenAt] = the index of the
// largest logit, ties to the lowest index (sampling.wgsl's argmax, NaN keys included).
@compute @workgroup_size(WG)
fn head(@builtin(local_invocation_index) lid: u32) {
  for (var c = lid; c < DIM4; c += WG) {
    vin[c] = vec4<f32>(x[4u * c], x[4u * c + 1u], x[4u * c + 2u], x[4u * c + 3u]);
  }
  workgroupBarrier();
  normalise(params.attnNormAt, lid);
  let xh = input_registers(DIM4);
  var best = vec2<u32>(0u, 0xffffffffu);  // key 0 is below every non-NaN value
  for (var r = lid; r < params.vocab; r += WG) {
    let v = row_dot(params.headAt, r, DIM4, xh);
    logits[r] = v;
    let candidate = vec2<u32>(order_key(v), r);
    if (beats(candidate, best)) { best = candidate; }
  }
  best_lanes[lid] = best;
  workgroupBarrier();
  if (ARGMAX && lid == 0u) {
    for (var i = 1u; i < WG; i++) {
      if (beats(best_lanes[i], best)) { best = best_lanes[i]; }
    }
    tokens[params.tokenAt] = best.y;
  }
}
