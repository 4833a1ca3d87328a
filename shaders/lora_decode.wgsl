// LoRA for one token (decode), both products in one dispatch:
//   h = x·Aᵀ (rank values), y += scale · h·Bᵀ.
// A and B are read from the adapter's flat parameter buffer at element offsets, so every
// projection of every layer binds the same buffer. Each workgroup first computes all of h into
// workgroup memory: for each block of RANK_BLOCK rank rows its WG invocations split the input
// (consecutive invocations, consecutive elements), keep one partial sum per row, and reduce.wgsl's
// tree adds the partial sums of the block's rows at once. Then the workgroup's OUT_PER_WG outputs
// are each a dot of h with one row of B, split over B_LANES consecutive invocations whose partial
// sums one of them adds in order. On a GPU a dispatch's time is about the longest chain of loads
// one invocation waits on, so there every product is spread wide (256 invocations, 64 outputs a
// workgroup, 4 lanes an output); on a CPU adapter a workgroup is one SIMD group and each barrier a
// coroutine switch, so there few wide workgroups (8 lanes, 512 outputs, 1 lane an output) win.
override WG: u32 = 64;            // invocations, a power of two
override OUT_PER_WG: u32 = 512;   // outputs each workgroup writes
override MAX_RANK: u32 = 64;      // largest rank (sizes h)
override RANK_BLOCK: u32 = 16;    // rank rows reduced at once
override B_LANES: u32 = 1;        // invocations per output of B·h, a power of two dividing WG

//!include "reduce.wgsl"
// reduce_lanes is [RANK_BLOCK, WG]: per block of rank rows, each invocation's partial sums.
const REDUCE_ROWS: u32 = RANK_BLOCK;

struct Params { inDim: u32, outDim: u32, rank: u32, aOffset: u32, bOffset: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> adapter: array<f32>;    // flat; A [rank, in] at aOffset, B [out, rank] at bOffset
@group(0) @binding(2) var<storage, read> x: array<f32>;          // [in]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // [out], added to

var<workgroup> h: array<f32, MAX_RANK>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  for (var r0 = 0u; r0 < params.rank; r0 += RANK_BLOCK) {
    let rows = min(RANK_BLOCK, params.rank - r0);
    for (var r = 0u; r < rows; r++) {
      let row = params.aOffset + (r0 + r) * params.inDim;
      var sum = 0.0;
      for (var i = lid; i < params.inDim; i += WG) { sum = fma(x[i], adapter[row + i], sum); }
      reduce_lanes[r * WG + lid] = sum;
    }
    reduce_rows(lid, rows, REDUCE_SUM);
    for (var r = lid; r < rows; r += WG) {
      h[r0 + r] = reduce_lanes[r * WG];
    }
    workgroupBarrier(); // the block's sums are taken before the next block overwrites the lanes
  }
  let first = wg.x * OUT_PER_WG;
  let last = min(first + OUT_PER_WG, params.outDim);
  let lane = lid % B_LANES;
  for (var o0 = first; o0 < last; o0 += WG / B_LANES) {
    let o = o0 + lid / B_LANES;
    var sum = 0.0;
    if (o < last) {
      let row = params.bOffset + o * params.rank;
      for (var r = lane; r < params.rank; r += B_LANES) { sum = fma(h[r], adapter[row + r], sum); }
    }
    if (B_LANES > 1u) {
      reduce_lanes[lid] = sum;
      workgroupBarrier();
      if (lane == 0u) {
        for (var j = 1u; j < B_LANES; j++) { sum += reduce_lanes[lid + j]; }
      }
      workgroupBarrier(); // every partial is read before the next outputs overwrite the lanes
    }
    if (lane == 0u && o < last) { y[o] += params.scale * sum; }
  }
}
