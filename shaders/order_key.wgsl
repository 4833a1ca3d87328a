// The order of logits as u32 keys, shared by sampling.wgsl and decode_layer.wgsl: pull it in with
// `//!include "order_key.wgsl"`.

// Maps an f32 to a u32 with the same order (for non-NaN values).
fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Whether (key a, index i) beats (key b, index j): larger key, then lower index (argmax's ties).
fn beats(a: vec2<u32>, b: vec2<u32>) -> bool {
  return a.x > b.x || (a.x == b.x && a.y < b.y);
}
