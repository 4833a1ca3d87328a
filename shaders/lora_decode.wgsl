// LoRA for one token (decode), both products in one dispatch:
//   h = x·Aᵀ (rank values), y += scale · h·Bᵀ.
// A and B are read from the adapter's flat parameter buffer at element offsets, so every
// projection of every layer binds the same buffer. Each workgroup recomputes h (rank x in
// multiply-adds: thread j owns h[j]) into workgroup memory, then writes its slice of y.
override WG: u32 = 64;        // threads; the rank must not exceed it
override OUT_PER_WG: u32 = 512; // outputs each workgroup writes

struct Params { inDim: u32, outDim: u32, rank: u32, aOffset: u32, bOffset: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> adapter: array<f32>;    // flat; A [rank, in] at aOffset, B [out, rank] at bOffset
@group(0) @binding(2) var<storage, read> x: array<f32>;          // [in]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // [out], added to

var<workgroup> h: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let j = lid.x;
  if (j < params.rank) {
    let row = params.aOffset + j * params.inDim;
    var sum = 0.0;
    for (var i = 0u; i < params.inDim; i++) { sum = fma(x[i], adapter[row + i], sum); }
    h[j] = sum;
  }
  workgroupBarrier();
  let first = wg.x * OUT_PER_WG;
  let last = min(first + OUT_PER_WG, params.outDim);
  for (var o = first + j; o < last; o += WG) {
    let row = params.bOffset + o * params.rank;
    var sum = 0.0;
    for (var r = 0u; r < params.rank; r++) { sum = fma(h[r], adapter[row + r], sum); }
    y[o] += params.scale * sum;
  }
}
