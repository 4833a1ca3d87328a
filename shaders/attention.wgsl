// Causal grouped-query attention over a KV cache, forward and backward.
//
// Query row t (0 <= t < tokens) sits at absolute position past + t and attends to keys
// 0..past + t. Head h reads kv head h / group (group = nHeads / nKvHeads). Scores are
// scale * q·k.
//
// The tiled kernels give each invocation RPI whole rows (query rows, or key rows in
// backward_dkdv) held in registers, and stream the other side through workgroup memory in tiles.
// Every workgroup-memory read in their inner loops is then the same address in all invocations
// (a broadcast), which suits both GPUs and llvmpipe's SIMD lanes, and serves all RPI rows: on
// llvmpipe those reads were half of the forward's time at head dim 8. Each row's sums are the same
// whatever RPI is.
//
// Forward entry points (online softmax: running max and sum over tiles of keys):
//   forward_tiled[_lse]  one workgroup of BQ / RPI invocations per (BQ query rows, head); K/V
//                        tiles of BK rows. Prefill and training.
//   forward_rows[_lse]   one workgroup of WG invocations per (query row, up to GR heads of one
//                        kv head); the keys are split among the invocations (KPT each per chunk
//                        of WG·KPT keys), read once for those heads, and the partial results
//                        reduced. Decode, where one query row per head leaves a tile mostly empty.
// The _lse variants also save logsumexp per (t, head) for the backward.
//
// The cache (k, v) is bound as u32 words: f32 values (KV_F16 false) or f16 pairs packed two to
// a word, element 2i in the low half (KV_F16 true; unpack2x16float, so no shader-f16 needed).
//
// Backward (FlashAttention-style: probabilities are recomputed as P = exp(s - lse) from the
// saved logsumexp, never stored), in two dispatches so that no two workgroups write one element:
//   backward_dq    BQ / RPI invocations per (BQ query rows, head): delta_t = dOut_t·out_t (saved
//                  for the next pass) and dQ_t = scale · sum_j P_tj (dOut_t·v_j - delta_t) k_j.
//   backward_dkdv  BK / RPI invocations per (BK key rows, kv head), walking tiles of BQ query rows of
//                  every head in the group that see those keys: dV_j = sum P_tj dOut_t,
//                  dK_j = scale · sum dS_tj q_t.

override HD: u32 = 64; // head dim, at most 256
override BQ: u32 = 32; // query rows per tile
override BK: u32 = 32; // key rows per tile
override WG: u32 = 64; // forward_rows: invocations per workgroup
override KPT: u32 = 4; // forward_rows: keys per invocation per chunk
override GR: u32 = 4; // forward_rows: heads of one kv group per workgroup
override KV_F16: bool = false; // k and v hold f16 pairs, else f32
override RPI: u32 = 1; // tiled kernels: rows each invocation owns; divides BQ and BK

const HD4: u32 = (HD + 3u) / 4u; // head dim in vec4s; workgroup copies are zero-padded
const CHUNK: u32 = WG * KPT;
const QT: u32 = BQ / RPI; // invocations of forward_tiled and backward_dq
const KT: u32 = BK / RPI; // invocations of backward_dkdv
// Masked score: exp(NEG - m) is 0 for any finite running max m, and NEG - NEG is not NaN.
const NEG: f32 = -3.0e38;

// keys = past + tokens (rows of k/v that are read); group = nHeads / nKvHeads.
struct Params {
  tokens: u32,
  past: u32,
  keys: u32,
  nHeads: u32,
  nKvHeads: u32,
  group: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [tokens, nHeads, HD]
@group(0) @binding(2) var<storage, read> k: array<u32>;             // [>= keys, nKvHeads, HD] f32 or f16
@group(0) @binding(3) var<storage, read> v: array<u32>;             // [>= keys, nKvHeads, HD] f32 or f16
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // [tokens, nHeads, HD]
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;     // [tokens, nHeads]
@group(0) @binding(6) var<storage, read> dOut: array<f32>;          // [tokens, nHeads, HD]
@group(0) @binding(7) var<storage, read> outFwd: array<f32>;        // [tokens, nHeads, HD]
@group(0) @binding(8) var<storage, read> lseFwd: array<f32>;        // [tokens, nHeads]
@group(0) @binding(9) var<storage, read_write> delta: array<f32>;   // [tokens, nHeads]
@group(0) @binding(10) var<storage, read_write> dQ: array<f32>;     // [tokens, nHeads, HD]
@group(0) @binding(11) var<storage, read_write> dK: array<f32>;     // [keys, nKvHeads, HD]
@group(0) @binding(12) var<storage, read_write> dV: array<f32>;     // [keys, nKvHeads, HD]

var<workgroup> qTile: array<vec4<f32>, BQ * HD4>;
var<workgroup> doTile: array<vec4<f32>, BQ * HD4>;
var<workgroup> kTile: array<vec4<f32>, BK * HD4>;
var<workgroup> vTile: array<vec4<f32>, BK * HD4>;
var<workgroup> rowLse: array<f32, BQ>;
var<workgroup> rowDelta: array<f32, BQ>;
var<workgroup> qRows: array<vec4<f32>, GR * HD4>;
var<workgroup> chunkP: array<f32, GR * CHUNK>;
var<workgroup> partial: array<f32, GR * WG>;
var<workgroup> partialAcc: array<vec4<f32>, GR * WG>;

// Elements 4·d4 .. 4·d4+3 of the head-dim row at `base`, zero past HD. Storage pointers cannot be
// function parameters, hence one loader per binding.
fn load4_q(base: u32, d4: u32) -> vec4<f32> {
  let d = base + d4 * 4u;
  if (HD % 4u == 0u) { return vec4<f32>(q[d], q[d + 1u], q[d + 2u], q[d + 3u]); }
  var r = vec4<f32>(0.0);
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { r[i] = q[d + i]; } }
  return r;
}

fn load4_k(base: u32, d4: u32) -> vec4<f32> {
  let d = base + d4 * 4u;
  if (KV_F16 && HD % 4u == 0u) {
    return vec4<f32>(unpack2x16float(k[d / 2u]), unpack2x16float(k[d / 2u + 1u]));
  }
  if (HD % 4u == 0u) { return bitcast<vec4<f32>>(vec4<u32>(k[d], k[d + 1u], k[d + 2u], k[d + 3u])); }
  var r = vec4<f32>(0.0);
  //!unroll for (var i = 0u; i < 4u; i++) {
    if (d4 * 4u + i < HD) {
      let e = d + i;
      if (KV_F16) { r[i] = unpack2x16float(k[e / 2u])[e % 2u]; } else { r[i] = bitcast<f32>(k[e]); }
    }
  }
  return r;
}

fn load4_v(base: u32, d4: u32) -> vec4<f32> {
  let d = base + d4 * 4u;
  if (KV_F16 && HD % 4u == 0u) {
    return vec4<f32>(unpack2x16float(v[d / 2u]), unpack2x16float(v[d / 2u + 1u]));
  }
  if (HD % 4u == 0u) { return bitcast<vec4<f32>>(vec4<u32>(v[d], v[d + 1u], v[d + 2u], v[d + 3u])); }
  var r = vec4<f32>(0.0);
  //!unroll for (var i = 0u; i < 4u; i++) {
    if (d4 * 4u + i < HD) {
      let e = d + i;
      if (KV_F16) { r[i] = unpack2x16float(v[e / 2u])[e % 2u]; } else { r[i] = bitcast<f32>(v[e]); }
    }
  }
  return r;
}

fn load4_dOut(base: u32, d4: u32) -> vec4<f32> {
  let d = base + d4 * 4u;
  if (HD % 4u == 0u) { return vec4<f32>(dOut[d], dOut[d + 1u], dOut[d + 2u], dOut[d + 3u]); }
  var r = vec4<f32>(0.0);
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { r[i] = dOut[d + i]; } }
  return r;
}

fn load4_outFwd(base: u32, d4: u32) -> vec4<f32> {
  let d = base + d4 * 4u;
  if (HD % 4u == 0u) {
    return vec4<f32>(outFwd[d], outFwd[d + 1u], outFwd[d + 2u], outFwd[d + 3u]);
  }
  var r = vec4<f32>(0.0);
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { r[i] = outFwd[d + i]; } }
  return r;
}

fn store4_out(base: u32, d4: u32, x: vec4<f32>) {
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { out[base + d4 * 4u + i] = x[i]; } }
}

fn store4_dQ(base: u32, d4: u32, x: vec4<f32>) {
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { dQ[base + d4 * 4u + i] = x[i]; } }
}

fn store4_dK(base: u32, d4: u32, x: vec4<f32>) {
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { dK[base + d4 * 4u + i] = x[i]; } }
}

fn store4_dV(base: u32, d4: u32, x: vec4<f32>) {
  //!unroll for (var i = 0u; i < 4u; i++) { if (d4 * 4u + i < HD) { dV[base + d4 * 4u + i] = x[i]; } }
}

// Loads key rows j0 .. j0+BK-1 of kv head g into kTile/vTile, zero from row `end` on.
fn load_kv_tile(j0: u32, end: u32, g: u32, tid: u32, stride: u32) {
  for (var i = tid; i < BK * HD4; i += stride) {
    let j = j0 + i / HD4;
    var kx = vec4<f32>(0.0);
    var vx = vec4<f32>(0.0);
    if (j < end) {
      let base = (j * params.nKvHeads + g) * HD;
      kx = load4_k(base, i % HD4);
      vx = load4_v(base, i % HD4);
    }
    kTile[i] = kx;
    vTile[i] = vx;
  }
}

// ---- forward, tiled ----------------------------------------------------------------------------

// Invocation tid owns query rows t0 + ri·QT + tid (ri < RPI): their q, running max/sum and
// output stay in registers. Returns each row's (running max, softmax denominator).
fn attend_tiled(t0: u32, h: u32, tid: u32) -> array<vec2<f32>, RPI> {
  let nH = params.nHeads;
  var qv: array<array<vec4<f32>, HD4>, RPI>;
  var acc: array<array<vec4<f32>, HD4>, RPI>;
  var m: array<f32, RPI>;
  var l: array<f32, RPI>;
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let qBase = (min(t0 + ri * QT + tid, params.tokens - 1u) * nH + h) * HD;
    //!unroll for (var d4 = 0u; d4 < HD4; d4++) { qv[ri][d4] = load4_q(qBase, d4) * params.scale; }
    m[ri] = NEG;
  }
  let first = params.past + t0 + tid; // the last key row ri = 0 sees; row ri sees ri·QT more
  let keyEnd = params.past + min(t0 + BQ, params.tokens);
  for (var j0 = 0u; j0 < keyEnd; j0 += BK) {
    workgroupBarrier(); // the previous tile is consumed
    load_kv_tile(j0, keyEnd, h / params.group, tid, QT);
    workgroupBarrier();
    var sc: array<array<f32, BK>, RPI>;
    var mt = m;
    for (var c = 0u; c < BK; c++) {
      var kc: array<vec4<f32>, HD4>;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) { kc[d4] = kTile[c * HD4 + d4]; }
      //!unroll for (var ri = 0u; ri < RPI; ri++) {
        var dot = vec4<f32>(0.0);
        //!unroll for (var d4 = 0u; d4 < HD4; d4++) { dot += qv[ri][d4] * kc[d4]; }
        let s = select(NEG, dot.x + dot.y + dot.z + dot.w, j0 + c <= first + ri * QT);
        sc[ri][c] = s;
        mt[ri] = max(mt[ri], s);
      }
    }
    //!unroll for (var ri = 0u; ri < RPI; ri++) {
      let alpha = exp(m[ri] - mt[ri]);
      m[ri] = mt[ri];
      l[ri] *= alpha;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) { acc[ri][d4] *= alpha; }
    }
    for (var c = 0u; c < BK; c++) {
      var vc: array<vec4<f32>, HD4>;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) { vc[d4] = vTile[c * HD4 + d4]; }
      //!unroll for (var ri = 0u; ri < RPI; ri++) {
        let p = exp(sc[ri][c] - m[ri]);
        l[ri] += p;
        //!unroll for (var d4 = 0u; d4 < HD4; d4++) { acc[ri][d4] += p * vc[d4]; }
      }
    }
  }
  var stats: array<vec2<f32>, RPI>;
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let t = t0 + ri * QT + tid;
    if (t < params.tokens) {
      let outBase = (t * nH + h) * HD;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) { store4_out(outBase, d4, acc[ri][d4] / l[ri]); }
    }
    stats[ri] = vec2<f32>(m[ri], l[ri]);
  }
  return stats;
}

@compute @workgroup_size(QT)
fn forward_tiled(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  attend_tiled(wid.x * BQ, wid.y, tid);
}

@compute @workgroup_size(QT)
fn forward_tiled_lse(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let stats = attend_tiled(wid.x * BQ, wid.y, tid);
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let t = wid.x * BQ + ri * QT + tid;
    if (t < params.tokens) { lse[t * params.nHeads + wid.y] = stats[ri].x + log(stats[ri].y); }
  }
}

// ---- forward, one query row per workgroup ------------------------------------------------------

// Query row t of up to GR heads that share kv head g (heads h0 .. h0 + nh - 1). The keys are read
// once for all of them. Returns per head (running max, softmax denominator), valid in
// invocation 0.
fn attend_row(t: u32, g: u32, h0: u32, nh: u32, tid: u32) -> array<vec2<f32>, GR> {
  for (var i = tid; i < GR * HD4; i += WG) {
    let hh = i / HD4;
    var x = vec4<f32>(0.0);
    if (hh < nh) { x = load4_q((t * params.nHeads + h0 + hh) * HD, i % HD4) * params.scale; }
    qRows[i] = x;
  }
  // In the P·V step invocation tid owns vec4 column d4 over the keys of one slice.
  let slices = WG / HD4;
  let d4 = tid % HD4;
  let slice = tid / HD4;
  let keyEnd = params.past + t + 1u;
  var m: array<f32, GR>; // the same in every invocation
  var l: array<f32, GR>; // this invocation's share of the denominators
  var acc: array<vec4<f32>, GR>;
  //!unroll for (var hh = 0u; hh < GR; hh++) { m[hh] = NEG; }
  for (var j0 = 0u; j0 < keyEnd; j0 += CHUNK) {
    workgroupBarrier(); // the previous chunk is consumed (and qRows is ready on the first pass)
    var localMax: array<f32, GR>;
    //!unroll for (var hh = 0u; hh < GR; hh++) { localMax[hh] = NEG; }
    for (var e = 0u; e < KPT; e++) {
      let c = tid + e * WG;
      let j = j0 + c;
      var dots = array<vec4<f32>, GR>(); // explicit: naga zeroes a loop-local var only once
      if (j < keyEnd) {
        let base = (j * params.nKvHeads + g) * HD;
        //!unroll for (var i = 0u; i < HD4; i++) {
          let kx = load4_k(base, i);
          //!unroll for (var hh = 0u; hh < GR; hh++) { dots[hh] += qRows[hh * HD4 + i] * kx; }
        }
      }
      //!unroll for (var hh = 0u; hh < GR; hh++) {
        let s = select(NEG, dots[hh].x + dots[hh].y + dots[hh].z + dots[hh].w, j < keyEnd);
        chunkP[hh * CHUNK + c] = s;
        localMax[hh] = max(localMax[hh], s);
      }
    }
    //!unroll for (var hh = 0u; hh < GR; hh++) { partial[hh * WG + tid] = localMax[hh]; }
    workgroupBarrier();
    //!unroll for (var hh = 0u; hh < GR; hh++) {
      if (hh < nh) {
        var mNew = m[hh];
        for (var i = 0u; i < WG; i++) { mNew = max(mNew, partial[hh * WG + i]); }
        let alpha = exp(m[hh] - mNew);
        m[hh] = mNew;
        var lh = l[hh] * alpha;
        acc[hh] *= alpha;
        for (var e = 0u; e < KPT; e++) {
          let c = hh * CHUNK + tid + e * WG;
          let p = exp(chunkP[c] - mNew);
          chunkP[c] = p;
          lh += p;
        }
        l[hh] = lh;
      }
    }
    workgroupBarrier();
    if (slice < slices) {
      let n = min(CHUNK, keyEnd - j0);
      for (var c = slice; c < n; c += slices) {
        let vx = load4_v(((j0 + c) * params.nKvHeads + g) * HD, d4);
        //!unroll for (var hh = 0u; hh < GR; hh++) { acc[hh] += chunkP[hh * CHUNK + c] * vx; }
      }
    }
  }
  // Every read of `partial` in the last chunk came before its last barrier.
  //!unroll for (var hh = 0u; hh < GR; hh++) {
    partial[hh * WG + tid] = l[hh];
    if (slice < slices) { partialAcc[hh * WG + tid] = acc[hh]; }
  }
  workgroupBarrier();
  var stats: array<vec2<f32>, GR>;
  if (tid < HD4) {
    //!unroll for (var hh = 0u; hh < GR; hh++) {
      if (hh < nh) {
        var total = 0.0;
        for (var i = 0u; i < WG; i++) { total += partial[hh * WG + i]; }
        var o = vec4<f32>(0.0);
        for (var s = 0u; s < slices; s++) { o += partialAcc[hh * WG + s * HD4 + tid]; }
        store4_out((t * params.nHeads + h0 + hh) * HD, tid, o / total);
        stats[hh] = vec2<f32>(m[hh], total);
      }
    }
  }
  return stats;
}

// Workgroup (t, y): y = g * blocks + b covers heads g * group + b * GR onwards of kv head g.
fn row_heads(y: u32) -> vec3<u32> {
  let blocks = (params.group + GR - 1u) / GR;
  let g = y / blocks;
  let first = (y % blocks) * GR;
  return vec3<u32>(g, g * params.group + first, min(GR, params.group - first));
}

@compute @workgroup_size(WG)
fn forward_rows(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let heads = row_heads(wid.y);
  attend_row(wid.x, heads.x, heads.y, heads.z, tid);
}

@compute @workgroup_size(WG)
fn forward_rows_lse(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let heads = row_heads(wid.y);
  let stats = attend_row(wid.x, heads.x, heads.y, heads.z, tid);
  if (tid == 0u) {
    for (var hh = 0u; hh < heads.z; hh++) {
      lse[wid.x * params.nHeads + heads.y + hh] = stats[hh].x + log(stats[hh].y);
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------

// Invocation tid owns query rows t0 + ri·QT + tid (ri < RPI; q, dOut and dQ in registers) and
// walks the K/V tiles.
@compute @workgroup_size(QT)
fn backward_dq(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let t0 = wid.x * BQ;
  let h = wid.y;
  let nH = params.nHeads;
  var qv: array<array<vec4<f32>, HD4>, RPI>;
  var dov: array<array<vec4<f32>, HD4>, RPI>;
  var dq: array<array<vec4<f32>, HD4>, RPI>;
  var deltas: array<f32, RPI>;
  var lses: array<f32, RPI>;
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let t = t0 + ri * QT + tid;
    let row = min(t, params.tokens - 1u) * nH + h;
    var d = vec4<f32>(0.0);
    //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
      qv[ri][d4] = load4_q(row * HD, d4) * params.scale;
      dov[ri][d4] = load4_dOut(row * HD, d4);
      d += dov[ri][d4] * load4_outFwd(row * HD, d4);
    }
    deltas[ri] = d.x + d.y + d.z + d.w;
    lses[ri] = lseFwd[row];
    if (t < params.tokens) { delta[row] = deltas[ri]; }
  }
  let first = params.past + t0 + tid; // the last key row ri = 0 sees; row ri sees ri·QT more
  let keyEnd = params.past + min(t0 + BQ, params.tokens);
  for (var j0 = 0u; j0 < keyEnd; j0 += BK) {
    workgroupBarrier();
    load_kv_tile(j0, keyEnd, h / params.group, tid, QT);
    workgroupBarrier();
    for (var c = 0u; c < BK; c++) {
      var kc: array<vec4<f32>, HD4>;
      var vc: array<vec4<f32>, HD4>;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
        kc[d4] = kTile[c * HD4 + d4];
        vc[d4] = vTile[c * HD4 + d4];
      }
      //!unroll for (var ri = 0u; ri < RPI; ri++) {
        var s = vec4<f32>(0.0);
        var dp = vec4<f32>(0.0);
        //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
          s += qv[ri][d4] * kc[d4];
          dp += dov[ri][d4] * vc[d4];
        }
        var ds = 0.0;
        if (j0 + c <= first + ri * QT) {
          let p = exp(s.x + s.y + s.z + s.w - lses[ri]);
          ds = p * (dp.x + dp.y + dp.z + dp.w - deltas[ri]);
        }
        //!unroll for (var d4 = 0u; d4 < HD4; d4++) { dq[ri][d4] += ds * kc[d4]; }
      }
    }
  }
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let t = t0 + ri * QT + tid;
    if (t < params.tokens) {
      let row = t * nH + h;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) { store4_dQ(row * HD, d4, dq[ri][d4] * params.scale); }
    }
  }
}

// Invocation tid owns key rows j0 + ri·KT + tid (ri < RPI; k, v, dK, dV in registers) and walks
// tiles of BQ query rows of every head in its group. Reads `delta` from backward_dq; record it
// after that dispatch.
@compute @workgroup_size(KT)
fn backward_dkdv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
) {
  let j0 = wid.x * BK;
  let g = wid.y;
  let nH = params.nHeads;
  let past = params.past;
  var kv: array<array<vec4<f32>, HD4>, RPI>;
  var vv: array<array<vec4<f32>, HD4>, RPI>;
  var dk: array<array<vec4<f32>, HD4>, RPI>;
  var dv: array<array<vec4<f32>, HD4>, RPI>;
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let kvBase = (min(j0 + ri * KT + tid, params.keys - 1u) * params.nKvHeads + g) * HD;
    //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
      kv[ri][d4] = load4_k(kvBase, d4) * params.scale;
      vv[ri][d4] = load4_v(kvBase, d4);
    }
  }
  // Query t sees key j when past + t >= j, so the first query row that sees key j0:
  let tFirst = select(0u, j0 - past, j0 > past);
  for (var hh = 0u; hh < params.group; hh++) {
    let h = g * params.group + hh;
    for (var t0 = tFirst; t0 < params.tokens; t0 += BQ) {
      workgroupBarrier(); // the previous query tile is consumed
      for (var i = tid; i < BQ * HD4; i += KT) {
        let t = t0 + i / HD4;
        var qx = vec4<f32>(0.0);
        var dx = vec4<f32>(0.0);
        if (t < params.tokens) {
          let base = (t * nH + h) * HD;
          qx = load4_q(base, i % HD4);
          dx = load4_dOut(base, i % HD4);
        }
        qTile[i] = qx;
        doTile[i] = dx;
      }
      for (var r = tid; r < BQ; r += KT) {
        let t = t0 + r;
        var m = 0.0;
        var d = 0.0;
        if (t < params.tokens) {
          m = lseFwd[t * nH + h];
          d = delta[t * nH + h];
        }
        rowLse[r] = m;
        rowDelta[r] = d;
      }
      workgroupBarrier();
      for (var r = 0u; r < BQ; r++) {
        var qc: array<vec4<f32>, HD4>;
        var dc: array<vec4<f32>, HD4>;
        //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
          qc[d4] = qTile[r * HD4 + d4];
          dc[d4] = doTile[r * HD4 + d4];
        }
        let t = t0 + r;
        let lseR = rowLse[r];
        let deltaR = rowDelta[r];
        //!unroll for (var ri = 0u; ri < RPI; ri++) {
          var s = vec4<f32>(0.0);
          var dp = vec4<f32>(0.0);
          //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
            s += kv[ri][d4] * qc[d4];
            dp += vv[ri][d4] * dc[d4];
          }
          let j = j0 + ri * KT + tid;
          var p = 0.0;
          var ds = 0.0;
          if (j < params.keys && t < params.tokens && j <= past + t) {
            p = exp(s.x + s.y + s.z + s.w - lseR);
            ds = p * (dp.x + dp.y + dp.z + dp.w - deltaR);
          }
          //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
            dv[ri][d4] += p * dc[d4];
            dk[ri][d4] += ds * qc[d4];
          }
        }
      }
    }
  }
  //!unroll for (var ri = 0u; ri < RPI; ri++) {
    let j = j0 + ri * KT + tid;
    if (j < params.keys) {
      let kvBase = (j * params.nKvHeads + g) * HD;
      //!unroll for (var d4 = 0u; d4 < HD4; d4++) {
        store4_dK(kvBase, d4, dk[ri][d4] * params.scale);
        store4_dV(kvBase, d4, dv[ri][d4]);
      }
    }
  }
}
