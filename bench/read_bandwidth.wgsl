// Reads src once, in vec4s, and writes one sum per thread: the plain read-bandwidth yardstick
// that a decode step's weight reads are measured against (bench/peer_bench.ts). The copy kernel
// (shaders/copy.wgsl) also writes every element it reads; this one only reads.
override WG: u32 = 256;

struct Params { n4: u32, stride: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;   // [n4]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;   // [stride]: one sum per thread

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  var acc = vec4<f32>(0.0);
  for (var i = gid.x; i < params.n4; i += params.stride) {
    acc += src[i];
  }
  dst[gid.x] = acc.x + acc.y + acc.z + acc.w;
}
