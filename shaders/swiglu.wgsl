// SwiGLU gate of the MLP: out = silu(gate) * up elementwise over [tokens, hidden], and its
// backward. n (= tokens * hidden) must be a multiple of 4; n4 = n / 4. Grid-strided over vec4s.

override WG: u32 = 64;

struct Params { n4: u32, stride: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gate: array<vec4<f32>>;          // [tokens, hidden]
@group(0) @binding(2) var<storage, read> up: array<vec4<f32>>;            // [tokens, hidden]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;     // [tokens, hidden]
@group(0) @binding(4) var<storage, read> dOut: array<vec4<f32>>;          // [tokens, hidden]
@group(0) @binding(5) var<storage, read_write> dGate: array<vec4<f32>>;   // [tokens, hidden]
@group(0) @binding(6) var<storage, read_write> dUp: array<vec4<f32>>;     // [tokens, hidden]

//!include "sigmoid.wgsl"

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < params.n4; i += params.stride) {
    let g = gate[i];
    out[i] = g * sigmoids(g).pos * up[i];
  }
}

// dUp = dOut * silu(gate); dGate = dOut * up * silu'(gate), silu'(x) = s(x) (1 + x s(-x)).
@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < params.n4; i += params.stride) {
    let g = gate[i];
    let s = sigmoids(g);
    let d = dOut[i];
    dUp[i] = d * g * s.pos;
    dGate[i] = d * up[i] * s.pos * (1.0 + g * s.neg);
  }
}
