// Decode's matrix-vector products (one token) with their neighbours fused in, so that a layer
// takes few dispatches:
//
//   NORM      the input is RMS-normalised on its way in, x * rstd * normW with rstd =
//             1 / sqrt(mean(x^2) + eps). The sum of squares is taken in rmsnorm.wgsl's order
//             (NORM_LANES lanes striding over vec4s, then the same tree), so the normalised values
//             are rmsnorm's bit for bit.
//   product   up to three matrices [rows_p, K] one after another in one buffer, part p starting at
//             base_p: f32 (WTYPE 0), f16 pairs (1) or GGUF blocks (2, QTYPE). A workgroup owns
//             ROWS slots of one part (of two for EPI_SWIGLU); its WG invocations stride over K as
//             matvec.wgsl and quant_matvec.wgsl do and reduce with the same tree, so each row's
//             dot product is theirs bit for bit.
//   LORA      an adapter on each part: h = A·xn (rank values; all invocations split the input and
//             reduce.wgsl's tree adds their shares, ROWS rank rows at a time), then scale · h·Bᵀ
//             added to each row. A and B are read from the adapter's flat parameter buffer.
//             With LORA_H every workgroup reads h from lora_hv instead of computing all of it: the
//             entry point lora_h_rows computes it ahead, one dispatch spreading the parts' rank
//             rows over workgroups of ROWS rows (the same sums, bit for bit), for adapters whose h
//             would cost every workgroup more than its share of the product.
//   epilogue  EPI_STORE: y[row] = v. EPI_ADD: y[row] += v (the residual adds after o and down).
//             EPI_QKV (parts q, k, v): RoPE on q and k when ROPE, q written to y, k and v appended
//             to the layer's KV buffer at kAt and vAt. EPI_SWIGLU (parts gate, up):
//             y[j] = silu(gate_j) * up_j.
//
// For RoPE a workgroup must hold both rows of each rotated pair: slots are taken in pair order
// (slot 2i and 2i + 1 of a head are the pair's two rows), so ROWS must be even. With KV_F16 the
// KV buffer holds f16 pairs packed in u32 words (element 2i in the low half; else f32 values in
// the words), and the slot of each even k or v row writes the word with the next row: slot s + 1,
// or s + 2 for half-split RoPE pairs (the host asks ROWS and headDim to be multiples of 4 there). For EPI_SWIGLU
// slots 0 .. ROWS/2 - 1 are gate rows and the rest the up rows of the same hidden units.
// Every barrier is reached by every invocation (grid-tail workgroups leave before the first).
// The flags are written as plain `if (FLAG ...)` conditions: src/ops/fused_matvec.ts folds the
// branches they decide before compiling, so a variant binds only the buffers it uses.

override WG: u32 = 64;          // invocations, a power of two
override ROWS: u32 = 4;         // slots per workgroup
override NORM: bool = false;
override NORM_LANES: u32 = 64;  // rmsnorm.wgsl's workgroup size, a power of two
override WTYPE: u32 = 0u;       // 0 f32, 1 f16, 2 quantized (QTYPE)
override EPI: u32 = 0u;         // 0 store, 1 add, 2 q/k/v, 3 swiglu
override LORA: bool = false;
override BIAS: bool = false;
override ROPE: bool = false;
override INTERLEAVED: bool = true;  // RoPE pairs (2i, 2i + 1); else (i, i + headDim / 2)
override MAX_RANK: u32 = 64;
override LORA_H: bool = false;
override KV_F16: bool = false;

const EPI_STORE: u32 = 0u;
const EPI_ADD: u32 = 1u;
const EPI_QKV: u32 = 2u;
const EPI_SWIGLU: u32 = 3u;
const HALF: u32 = ROWS / 2u;
const PARTS_PER_GROUP: u32 = select(1u, 2u, EPI == EPI_SWIGLU);

//!include "reduce.wgsl"
//!include "quant_blocks.wgsl"
//!include "rope_angles.wgsl"
//!include "sigmoid.wgsl"
// reduce_lanes is [ROWS, WG]: each invocation's partial sums of the slots' rows.
const REDUCE_ROWS: u32 = ROWS;

// k4 = K / 4. rows_p, base_p: rows of part p and where it starts (vec4s for f32, vec2<u32> for
// f16, bytes for blocks); stride: a row's length in the same unit. groups1, groups2: the first
// workgroup of parts 1 and 2 (EPI_QKV); groups: all of them; groupsX: the grid's x size.
// biasAt_p, aAt_p, bAt_p: where part p's bias, A [rank, K] and B [rows_p, rank] start (floats).
// pos: the token's position (RoPE); kAt, vAt: where its key and value rows go in kv. hRows: the
// rank rows of every part (lora_h_rows).
struct Params {
  k4: u32, eps: f32, stride: u32,
  rows0: u32, rows1: u32, rows2: u32,
  base0: u32, base1: u32, base2: u32,
  groups1: u32, groups2: u32, groups: u32, groupsX: u32,
  biasAt1: u32, biasAt2: u32,
  rank: u32, scale: f32,
  aAt0: u32, aAt1: u32, aAt2: u32, bAt0: u32, bAt1: u32, bAt2: u32,
  headDim: u32, pos: u32, kAt: u32, vAt: u32,
  hRows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;          // [K / 4] the input
@group(0) @binding(2) var<storage, read> normW: array<vec4<f32>>;      // [K / 4] NORM's weight
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;     // parts [rows_p, K] f32
@group(0) @binding(4) var<storage, read> weight16: array<vec2<u32>>;   // parts [rows_p, K] f16
@group(0) @binding(5) var<storage, read> qweight: array<u32>;          // parts' GGUF blocks
@group(0) @binding(6) var<storage, read> bias: array<f32>;             // parts' biases
@group(0) @binding(7) var<storage, read> adapter: array<vec4<f32>>;    // flat LoRA parameters
@group(0) @binding(8) var<storage, read_write> y: array<f32>;          // output (q for EPI_QKV)
@group(0) @binding(9) var<storage, read_write> kv: array<u32>;         // EPI_QKV: the KV buffer (f32 or f16 pairs)
@group(0) @binding(10) var<storage, read> freqs: array<vec4<f32>>;     // RoPE frequencies
@group(0) @binding(11) var<storage, read_write> lora_hv: array<f32>;   // LORA_H: [parts, rank] h

var<workgroup> norm_lanes: array<f32, NORM_LANES>;
var<workgroup> vals: array<f32, ROWS>;                     // the slots' products
var<workgroup> kv_vals: array<f32, ROWS>;                  // KV_F16: the slots' k or v values
var<workgroup> lora_h: array<f32, PARTS_PER_GROUP * MAX_RANK>;  // h of the workgroup's parts
var<private> rstd: f32;
var<private> offs: array<u32, ROWS>;  // where each slot's row starts in the weights

fn part_rows(p: u32) -> u32 {
  return select(select(params.rows0, params.rows1, p == 1u), params.rows2, p == 2u);
}

fn part_base(p: u32) -> u32 {
  return select(select(params.base0, params.base1, p == 1u), params.base2, p == 2u);
}

// The workgroup's part (its first one for EPI_SWIGLU) and the part index of its first slot.
fn group_slots(g: u32) -> vec2<u32> {
  if (EPI == EPI_SWIGLU) {
    return vec2<u32>(0u, g * HALF);
  }
  if (EPI == EPI_QKV && g >= params.groups2) {
    return vec2<u32>(2u, (g - params.groups2) * ROWS);
  }
  if (EPI == EPI_QKV && g >= params.groups1) {
    return vec2<u32>(1u, (g - params.groups1) * ROWS);
  }
  return vec2<u32>(0u, g * ROWS);
}

// Slot s's part and index within it (pair order for rotated parts).
fn slot_at(gs: vec2<u32>, s: u32) -> vec2<u32> {
  if (EPI == EPI_SWIGLU) {
    return vec2<u32>(s / HALF, gs.y + s % HALF);
  }
  return vec2<u32>(gs.x, gs.y + s);
}

fn rotated(p: u32) -> bool {
  return EPI == EPI_QKV && ROPE && p < 2u;
}

// The matrix row of index i of part p: pair order maps (2j, 2j + 1) of a head to pair j's rows.
fn row_of(p: u32, i: u32) -> u32 {
  if (rotated(p) && !INTERLEAVED) {
    let hd = params.headDim;
    let s = i % hd;
    return i - s + s / 2u + (s % 2u) * (hd / 2u);
  }
  return i;
}

// ---- the normalised input --------------------------------------------------------------------

fn compute_rstd(lid: u32) {
  for (var j = lid; j < NORM_LANES; j += WG) {
    var squares = 0.0;
    for (var c = j; c < params.k4; c += NORM_LANES) {
      let v = x[c];
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
  rstd = inverseSqrt(norm_lanes[0] / f32(params.k4 * 4u) + params.eps);
}

fn input4(k: u32) -> vec4<f32> {
  if (NORM) {
    return x[k] * rstd * normW[k];
  }
  return x[k];
}

// ---- per-invocation partial sums of the slots' rows, into reduce_lanes ------------------------

fn partials_f32(lid: u32) {
  var acc = array<vec4<f32>, ROWS>();
  for (var k = lid; k < params.k4; k += WG) {
    let xv = input4(k);
    for (var s = 0u; s < ROWS; s++) {
      acc[s] = fma(weight[offs[s] + k], xv, acc[s]);
    }
  }
  for (var s = 0u; s < ROWS; s++) {
    reduce_lanes[s * WG + lid] = acc[s].x + acc[s].y + acc[s].z + acc[s].w;
  }
}

fn partials_f16(lid: u32) {
  var acc = array<vec4<f32>, ROWS>();
  for (var k = lid; k < params.k4; k += WG) {
    let xv = input4(k);
    for (var s = 0u; s < ROWS; s++) {
      let packed = weight16[offs[s] + k];
      let wv = vec4<f32>(unpack2x16float(packed.x), unpack2x16float(packed.y));
      acc[s] = fma(wv, xv, acc[s]);
    }
  }
  for (var s = 0u; s < ROWS; s++) {
    reduce_lanes[s * WG + lid] = acc[s].x + acc[s].y + acc[s].z + acc[s].w;
  }
}

fn input8(k: u32) -> QX8 {
  return QX8(
    input4(k), input4(k + 1u), input4(k + 2u), input4(k + 3u),
    input4(k + 4u), input4(k + 5u), input4(k + 6u), input4(k + 7u),
  );
}

fn partials_quant(lid: u32) {
  var acc = array<f32, ROWS>();
  let pieces = params.k4 / Q_PIECE4;
  for (var p = lid; p < pieces; p += WG) {
    let at = Q_PIECE4 * p;
    var g1 = QX8();
    var g2 = QX8();
    var g3 = QX8();
    if (Q_PIECE == 128u) {
      g1 = input8(at + 8u);
      g2 = input8(at + 16u);
      g3 = input8(at + 24u);
    }
    let xs = q_piece(input8(at), g1, g2, g3);
    let col = Q_PIECE * p;
    let e = col % QK;
    let block = (col / QK) * QBYTES;
    for (var s = 0u; s < ROWS; s++) {
      acc[s] += q_dot_piece(offs[s] + block, e, xs);
    }
  }
  for (var s = 0u; s < ROWS; s++) {
    reduce_lanes[s * WG + lid] = acc[s];
  }
}

// A's rows (offs in vec4s of the adapter buffer).
fn partials_adapter(lid: u32) {
  var acc = array<vec4<f32>, ROWS>();
  for (var k = lid; k < params.k4; k += WG) {
    let xv = input4(k);
    for (var s = 0u; s < ROWS; s++) {
      acc[s] = fma(adapter[offs[s] + k], xv, acc[s]);
    }
  }
  for (var s = 0u; s < ROWS; s++) {
    reduce_lanes[s * WG + lid] = acc[s].x + acc[s].y + acc[s].z + acc[s].w;
  }
}

// ---- LoRA -------------------------------------------------------------------------------------

fn part_a(p: u32) -> u32 {
  return select(select(params.aAt0, params.aAt1, p == 1u), params.aAt2, p == 2u);
}

fn part_b(p: u32) -> u32 {
  return select(select(params.bAt0, params.bAt1, p == 1u), params.bAt2, p == 2u);
}

fn adapter_at(i: u32) -> f32 {
  return adapter[i >> 2u][i & 3u];
}

// lora_h[j] for j < PARTS_PER_GROUP * rank: rank row j % rank of the workgroup's part j / rank.
fn compute_lora_h(gs: vec2<u32>, lid: u32) {
  let total = PARTS_PER_GROUP * params.rank;
  for (var j0 = 0u; j0 < total; j0 += ROWS) {
    for (var s = 0u; s < ROWS; s++) {
      let j = min(j0 + s, total - 1u);
      offs[s] = part_a(gs.x + j / params.rank) / 4u + (j % params.rank) * params.k4;
    }
    partials_adapter(lid);
    reduce_rows(lid, ROWS, REDUCE_SUM);
    for (var s = lid; s < ROWS; s += WG) {
      if (j0 + s < total) {
        lora_h[j0 + s] = reduce_lanes[s * WG];
      }
    }
    workgroupBarrier();  // lora_h is complete and the lanes are free again
  }
}

// h[r] of part p: from lora_hv (LORA_H), else from the workgroup's own lora_h.
fn lora_h_at(gs: vec2<u32>, p: u32, r: u32) -> f32 {
  if (LORA_H) {
    return lora_hv[p * params.rank + r];
  }
  return lora_h[(p - gs.x) * params.rank + r];
}

// scale · h·B[row] for part p.
fn lora_delta(gs: vec2<u32>, p: u32, row: u32) -> f32 {
  let at = part_b(p) + row * params.rank;
  var sum = 0.0;
  for (var r = 0u; r < params.rank; r++) {
    sum = fma(lora_h_at(gs, p, r), adapter_at(at + r), sum);
  }
  return params.scale * sum;
}

// ---- the kernel -------------------------------------------------------------------------------

fn store_slot(s: u32, p: u32, row: u32, v: f32) {
  if (EPI == EPI_QKV && KV_F16 && p > 0u) {
    kv_vals[s] = v;
  } else if (EPI == EPI_QKV && p == 1u) {
    kv[params.kAt + row] = bitcast<u32>(v);
  } else if (EPI == EPI_QKV && p == 2u) {
    kv[params.vAt + row] = bitcast<u32>(v);
  } else if (EPI == EPI_ADD) {
    y[row] = y[row] + v;
  } else {
    y[row] = v;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.y * params.groupsX + wid.x;
  if (g >= params.groups) {
    return;  // the grid's tail: uniform across the workgroup
  }
  let gs = group_slots(g);
  if (NORM) {
    compute_rstd(lid);
  }
  for (var s = 0u; s < ROWS; s++) {
    let at = slot_at(gs, s);
    let row = row_of(at.x, min(at.y, part_rows(at.x) - 1u));
    offs[s] = part_base(at.x) + row * params.stride;
  }
  if (WTYPE == 0u) {
    partials_f32(lid);
  } else if (WTYPE == 1u) {
    partials_f16(lid);
  } else {
    partials_quant(lid);
  }
  reduce_rows(lid, ROWS, REDUCE_SUM);
  for (var s = lid; s < ROWS; s += WG) {
    vals[s] = reduce_lanes[s * WG];
  }
  workgroupBarrier();  // vals are taken: the lanes are free for LoRA
  if (LORA && !LORA_H) {
    compute_lora_h(gs, lid);
  }
  // Each slot's final value: bias and LoRA added.
  for (var s = lid; s < ROWS; s += WG) {
    let at = slot_at(gs, s);
    if (at.y < part_rows(at.x)) {
      let row = row_of(at.x, at.y);
      var v = vals[s];
      if (BIAS) {
        v += bias[select(select(0u, params.biasAt1, at.x == 1u), params.biasAt2, at.x == 2u) + row];
      }
      if (LORA) {
        v += lora_delta(gs, at.x, row);
      }
      vals[s] = v;
    }
  }
  workgroupBarrier();  // every slot's value is final before partners and pairs read it
  if (EPI == EPI_SWIGLU) {
    for (var u = lid; u < HALF; u += WG) {
      let unit = gs.y + u;
      if (unit < params.rows0) {
        let gate = vals[u];
        y[unit] = gate * sigmoids(vec4<f32>(gate)).pos.x * vals[HALF + u];
      }
    }
    return;
  }
  for (var s = lid; s < ROWS; s += WG) {
    let at = slot_at(gs, s);
    if (at.y < part_rows(at.x)) {
      let row = row_of(at.x, at.y);
      var v = vals[s];
      if (ROPE && EPI == EPI_QKV && at.x < 2u) {
        // The pair's rows are slots s & ~1 (first element) and s | 1 (second).
        let a = vals[s & ~1u];
        let b = vals[s | 1u];
        let cs = cos_sin(params.pos, (at.y % params.headDim) / 2u);
        if ((s & 1u) == 0u) {
          v = a * cs.x - b * cs.y;
        } else {
          v = a * cs.y + b * cs.x;
        }
      }
      store_slot(s, at.x, row, v);
    }
  }
  if (EPI == EPI_QKV && KV_F16) {
    workgroupBarrier();  // every k or v slot's value is in kv_vals
    for (var s = lid; s < ROWS; s += WG) {
      let at = slot_at(gs, s);
      if (at.x > 0u && at.y < part_rows(at.x)) {
        let row = row_of(at.x, at.y);
        if (row % 2u == 0u) {
          let next = s + select(1u, 2u, rotated(at.x) && !INTERLEAVED);
          let word = pack2x16float(vec2<f32>(kv_vals[s], kv_vals[next]));
          kv[(select(params.kAt, params.vAt, at.x == 2u) + row) / 2u] = word;
        }
      }
    }
  }
}

// LORA_H's h ahead of the product: lora_hv[j] for j < hRows, rank row j % rank of part j / rank,
// ROWS rows a workgroup, each summed as compute_lora_h sums it.
@compute @workgroup_size(WG)
fn lora_h_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let j0 = (wid.y * params.groupsX + wid.x) * ROWS;
  if (j0 >= params.hRows) {
    return;  // the grid's tail: uniform across the workgroup
  }
  if (NORM) {
    compute_rstd(lid);
  }
  for (var s = 0u; s < ROWS; s++) {
    let j = min(j0 + s, params.hRows - 1u);
    offs[s] = part_a(j / params.rank) / 4u + (j % params.rank) * params.k4;
  }
  partials_adapter(lid);
  reduce_rows(lid, ROWS, REDUCE_SUM);
  for (var s = lid; s < ROWS; s += WG) {
    if (j0 + s < params.hRows) {
      lora_hv[j0 + s] = reduce_lanes[s * WG];
    }
  }
}
