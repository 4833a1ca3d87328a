// The logistic function both ways, shared by swiglu.wgsl and fused_matvec.wgsl: pull it in with
// `//!include "sigmoid.wgsl"`.

// (sigmoid(x), sigmoid(-x)) from exp(-|x|), which never overflows; neither is formed as 1 - the
// other, so both keep full relative precision for large |x|.
struct Sigmoids { pos: vec4<f32>, neg: vec4<f32> }

fn sigmoids(x: vec4<f32>) -> Sigmoids {
  let e = exp(-abs(x));
  let big = 1.0 / (1.0 + e);
  let small = e * big;
  let positive = x >= vec4<f32>(0.0);
  return Sigmoids(select(small, big, positive), select(big, small, positive));
}
