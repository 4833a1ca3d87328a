// dst[dstOffset + i] = src[srcOffset + i] for i < n4, in vec4s: whole-tensor copies (the bandwidth
// yardstick) and row moves such as writing a step's values into the KV cache. main_f16 writes an
// f16 destination (an f16 KV cache: halves packed two to a u32 word, element 2i in the low half).
override WG: u32 = 256;

struct Params { n4: u32, srcOffset: u32, dstOffset: u32, stride: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;        // [>= srcOffset + n4]
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;  // [>= dstOffset + n4]
@group(0) @binding(3) var<storage, read_write> dst16: array<vec2<u32>>; // [>= dstOffset + n4] f16 x4

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < params.n4; i += params.stride) {
    dst[params.dstOffset + i] = src[params.srcOffset + i];
  }
}

@compute @workgroup_size(WG)
fn main_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < params.n4; i += params.stride) {
    let x = src[params.srcOffset + i];
    dst16[params.dstOffset + i] = vec2<u32>(pack2x16float(x.xy), pack2x16float(x.zw));
  }
}
