// Token selection on the GPU, so a decode loop can record many steps in one submit.
//   argmax:             per draw d (one workgroup), tokens[step + d] = argmax of its logits row
//                       (ties go to the lowest index).
//   repetition_penalty: in place on logitsInOut [V]: for each distinct id among
//                       history[first .. first + count), x > 0 ? x / penalty : x * penalty.
//   sample:             per draw d (one workgroup), temperature + top-k + top-p sampling with
//                       the counter-based uniform01(seed, step + d); writes tokens[step + d].
//   random_uniforms:    randoms[i] = uniform01(seed, step + i), to check the TypeScript twin.
//
// Sampling: weights w_i = exp((x_i - max) / temperature). The kept set is {i : x_i >= threshold},
// found without sorting by searching the order-preserving u32 keys of the logits:
//   top-k: the largest key K with count(key >= K) >= topK, i.e. the k-th largest logit
//          (ties at that value are all kept);
//   top-p: then the largest key P >= K with mass(key >= P) >= topP * mass(key >= K), i.e. the
//          smallest head of the sorted top-k tokens whose renormalised mass reaches topP.
// Each search pass splits the remaining key range into 8 buckets and totals them over the
// workgroup (about 11 passes over the row for a 32-bit range); there are no float atomics.
// The draw is an inverse CDF over the kept weights in vocabulary order: each thread owns a
// contiguous chunk, a workgroup scan gives chunk offsets, and one thread walks its chunk.
override WG: u32 = 256;  // a multiple of GROUP (16)

// V: vocabulary size; rowStride: elements between the logits rows of consecutive draws (0 =
// every draw reads the same row); step: the tokens slot (and random counter) of draw 0;
// topK: 0 = off; topP: >= 1 = off; penalty: repetition penalty; first, count: the window of
// history ids (repetition_penalty) or of randoms (random_uniforms).
struct Params {
  V: u32,
  rowStride: u32,
  step: u32,
  seed: u32,
  invTemperature: f32,
  topK: u32,
  topP: f32,
  penalty: f32,
  first: u32,
  count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;              // [draws or 1, V]
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;        // [maxSteps]
@group(0) @binding(3) var<storage, read_write> logitsInOut: array<f32>;   // [V]
@group(0) @binding(4) var<storage, read> history: array<u32>;             // [n] token ids
@group(0) @binding(5) var<storage, read_write> randoms: array<f32>;       // [count]

// Reductions go in two levels (groups of GROUP threads, then the group results), which needs
// far fewer barriers than the binary tree of reduce.wgsl: the threshold search runs about 22 of
// them per draw, over u32 keys and BUCKETS sums at once; WG must be a multiple of GROUP.
const GROUP: u32 = 16u;
const GROUPS: u32 = WG / GROUP;
// The threshold search splits its key range into 2^BUCKET_BITS buckets per pass.
const BUCKET_BITS: u32 = 3u;
const BUCKETS: u32 = 1u << BUCKET_BITS;

var<workgroup> red_f: array<f32, WG>;
var<workgroup> part_f: array<f32, GROUPS>;
var<workgroup> total_f: f32;
var<workgroup> red_u: array<vec2<u32>, WG>;
var<workgroup> part_u: array<vec2<u32>, GROUPS>;
var<workgroup> total_u: vec2<u32>;
var<workgroup> bucket_vals: array<f32, BUCKETS * WG>;      // [BUCKETS, WG]
var<workgroup> bucket_part: array<f32, BUCKETS * GROUPS>;  // [BUCKETS, GROUPS]
var<workgroup> next_range: KeyRange;

// A 32-bit PCG hash (RXS-M-XS output of one LCG step): a bijection with good mixing.
fn pcg_hash(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 random bits, a pure function of (seed, counter).
fn uniform01(seed: u32, counter: u32) -> f32 {
  let h = pcg_hash(pcg_hash(seed) ^ counter);
  return f32(h >> 8u) * (1.0 / 16777216.0);
}

//!include "order_key.wgsl"

fn from_key(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// The first level of a sum: red_f[t] = v, and part_f[g] = the sum over group g's GROUP threads.
fn group_sums(v: f32, t: u32) {
  red_f[t] = v;
  workgroupBarrier();
  if (t < GROUPS) {
    var s = 0.0;
    for (var j = 0u; j < GROUP; j++) { s += red_f[t * GROUP + j]; }
    part_f[t] = s;
  }
  workgroupBarrier();
}

// Workgroup sum of one value per thread, returned uniformly to every thread.
fn sum_f32(v: f32, t: u32) -> f32 {
  group_sums(v, t);
  if (t == 0u) {
    var s = 0.0;
    for (var g = 0u; g < GROUPS; g++) { s += part_f[g]; }
    total_f = s;
  }
  return workgroupUniformLoad(&total_f);
}

// Workgroup component-wise maximum, returned uniformly to every thread.
fn max2_u32(v: vec2<u32>, t: u32) -> vec2<u32> {
  red_u[t] = v;
  workgroupBarrier();
  if (t < GROUPS) {
    var m = vec2(0u);
    for (var j = 0u; j < GROUP; j++) { m = max(m, red_u[t * GROUP + j]); }
    part_u[t] = m;
  }
  workgroupBarrier();
  if (t == 0u) {
    var m = vec2(0u);
    for (var g = 0u; g < GROUPS; g++) { m = max(m, part_u[g]); }
    total_u = m;
  }
  return workgroupUniformLoad(&total_u);
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  let V = params.V;
  let base = wid.x * params.rowStride;
  var best = vec2(0u, 0xffffffffu);  // (order key, index); key 0 is below every non-NaN value
  for (var i = t; i < V; i += WG) {
    let c = vec2(order_key(logits[base + i]), i);
    if (beats(c, best)) { best = c; }
  }
  red_u[t] = best;
  workgroupBarrier();
  if (t < GROUPS) {
    var b = red_u[t * GROUP];
    for (var j = 1u; j < GROUP; j++) {
      if (beats(red_u[t * GROUP + j], b)) { b = red_u[t * GROUP + j]; }
    }
    part_u[t] = b;
  }
  workgroupBarrier();
  if (t == 0u) {
    var b = part_u[0];
    for (var g = 1u; g < GROUPS; g++) {
      if (beats(part_u[g], b)) { b = part_u[g]; }
    }
    tokens[params.step + wid.x] = min(b.y, V - 1u);
  }
}

// One invocation per history entry; only the first occurrence of an id applies the penalty, so a
// repeated id is penalised once, with no flag buffer and no write races.
@compute @workgroup_size(WG)
fn repetition_penalty(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= params.count) { return; }
  let id = history[params.first + i];
  if (id >= params.V) { return; }
  for (var j = 0u; j < i; j++) {
    if (history[params.first + j] == id) { return; }
  }
  let x = logitsInOut[id];
  logitsInOut[id] = select(x * params.penalty, x / params.penalty, x > 0.0);
}

@compute @workgroup_size(WG)
fn random_uniforms(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i < params.count) { randoms[i] = uniform01(params.seed, params.step + i); }
}

fn weight(x: f32, rowMax: f32) -> f32 {
  return exp((x - rowMax) * params.invTemperature);
}

// Sum of the weights of the tokens whose key is at least `threshold`.
fn mass_from(threshold: u32, base: u32, rowMax: f32, t: u32) -> f32 {
  var s = 0.0;
  for (var i = t; i < params.V; i += WG) {
    let x = logits[base + i];
    if (order_key(x) >= threshold) { s += weight(x, rowMax); }
  }
  return sum_f32(s, t);
}

// A search state: the answer is a key in [lo, hi]; `above` is the count or mass of keys > hi.
struct KeyRange { lo: u32, hi: u32, above: f32 }

// One pass of the threshold search for the largest key K with measure(key >= K) >= goal, where
// the measure is a count (useMass false) or the weight mass. Splits [lo, hi] into BUCKETS
// buckets, totals each over the workgroup, and keeps the highest bucket that still reaches goal.
fn narrow(r: KeyRange, useMass: bool, goal: f32, base: u32, rowMax: f32, t: u32) -> KeyRange {
  let span = r.hi - r.lo;
  let bits = 32u - countLeadingZeros(span);
  let shift = select(0u, bits - BUCKET_BITS, bits > BUCKET_BITS);
  var acc: array<f32, BUCKETS>;
  for (var i = t; i < params.V; i += WG) {
    let x = logits[base + i];
    let k = order_key(x);
    if (k >= r.lo && k <= r.hi) {
      acc[(k - r.lo) >> shift] += select(1.0, weight(x, rowMax), useMass);
    }
  }
  for (var b = 0u; b < BUCKETS; b++) { bucket_vals[b * WG + t] = acc[b]; }
  workgroupBarrier();
  if (t < BUCKETS * GROUPS) {
    let b = t / GROUPS;
    let g = t % GROUPS;
    var s = 0.0;
    for (var j = 0u; j < GROUP; j++) { s += bucket_vals[b * WG + g * GROUP + j]; }
    bucket_part[t] = s;
  }
  workgroupBarrier();
  if (t == 0u) {
    var above = r.above;
    var chosen = 0u;
    var chosenAbove = r.above;
    for (var b = BUCKETS; b > 0u; b--) {
      var s = 0.0;
      for (var g = 0u; g < GROUPS; g++) { s += bucket_part[(b - 1u) * GROUPS + g]; }
      // Bucket 0 is the fallback when float rounding leaves every bucket just short.
      if (above + s >= goal || b == 1u) {
        chosen = b - 1u;
        chosenAbove = above;
        break;
      }
      above += s;
    }
    let lo = min(r.lo + (chosen << shift), r.hi);
    let hi = lo + min(r.hi - lo, (1u << shift) - 1u);
    next_range = KeyRange(lo, hi, chosenAbove);
  }
  return workgroupUniformLoad(&next_range);
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  let V = params.V;
  let base = wid.x * params.rowStride;

  var keys = vec2(0u, 0u);  // (max key, ~min key)
  for (var i = t; i < V; i += WG) {
    let k = order_key(logits[base + i]);
    keys = max(keys, vec2(k, ~k));
  }
  keys = max2_u32(keys, t);
  let kmax = keys.x;
  let rowMax = from_key(kmax);

  var r = KeyRange(~keys.y, kmax, 0.0);
  if (params.topK > 0u && params.topK < V) {
    while (r.lo < r.hi) { r = narrow(r, false, f32(params.topK), base, rowMax, t); }
  }
  if (params.topP < 1.0) {
    let goal = params.topP * mass_from(r.lo, base, rowMax, t);
    r = KeyRange(r.lo, kmax, 0.0);
    while (r.lo < r.hi) { r = narrow(r, true, goal, base, rowMax, t); }
  }
  let threshold = r.lo;

  // Inverse CDF in vocabulary order over the kept tokens: thread t owns one contiguous chunk.
  let chunk = (V + WG - 1u) / WG;
  let start = min(V, t * chunk);
  let end = min(V, start + chunk);
  var own = 0.0;
  for (var i = start; i < end; i++) {
    let x = logits[base + i];
    if (order_key(x) >= threshold) { own += weight(x, rowMax); }
  }
  // Exclusive prefix of the chunk sums, summed in a fixed order so it never decreases with t.
  group_sums(own, t);
  let g = t / GROUP;
  var groupsBefore = 0.0;
  for (var h = 0u; h < g; h++) { groupsBefore += part_f[h]; }
  var inGroup = 0.0;
  for (var j = g * GROUP; j < t; j++) { inGroup += red_f[j]; }
  let before = groupsBefore + inGroup;
  var total = 0.0;
  for (var h = 0u; h < GROUPS; h++) { total += part_f[h]; }
  let goal = uniform01(params.seed, params.step + wid.x) * total;
  // The walking thread: the last one with kept mass whose chunk starts at or below the goal.
  let owner = max2_u32(vec2(select(0u, t + 1u, own > 0.0 && before <= goal), 0u), t).x;
  // No kept mass at all only happens for NaN or infinite logits: still fill the slot.
  if (owner == 0u && t == 0u) { tokens[params.step + wid.x] = 0u; }
  if (t + 1u == owner) {
    var c = before;
    var pick = 0xffffffffu;
    var lastKept = start;
    for (var i = start; i < end; i++) {
      let x = logits[base + i];
      if (order_key(x) >= threshold) {
        lastKept = i;
        c += weight(x, rowMax);
        if (c > goal) {
          pick = i;
          break;
        }
      }
    }
    tokens[params.step + wid.x] = select(pick, lastKept, pick == 0xffffffffu);
  }
}
