// The textbook 16 x 16 shared-memory tiled matmul, C = A·B: one result per thread. Kept only as
// the baseline the benchmarks measure shaders/matmul.wgsl against.
struct Params { m: u32, n: u32, k: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // [M, K]
@group(0) @binding(2) var<storage, read> b: array<f32>;        // [K, N]
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // [M, N]

var<workgroup> tileA: array<f32, 256>;  // [16][16]
var<workgroup> tileB: array<f32, 256>;  // [16][16]

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = gid.y;
  let col = gid.x;
  var sum = 0.0;
  for (var k0 = 0u; k0 < params.k; k0 += 16u) {
    let ak = k0 + lid.x;
    let bk = k0 + lid.y;
    tileA[lid.y * 16u + lid.x] = select(0.0, a[row * params.k + ak], row < params.m && ak < params.k);
    tileB[lid.y * 16u + lid.x] = select(0.0, b[bk * params.n + col], bk < params.k && col < params.n);
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) { sum += tileA[lid.y * 16u + kk] * tileB[kk * 16u + lid.x]; }
    workgroupBarrier();
  }
  if (row < params.m && col < params.n) { c[row * params.n + col] = sum; }
}
