// AdamW over every adapter tensor in one dispatch: parameters, gradients and both moments each
// live in one flat buffer of n elements (the adapter tensors are views into them).
// Gradients are multiplied by the clipping factor stats[1], and nothing is written when
// stats[2] (the non-finite flag) is set; both come from grad_norm.wgsl, so clipping and skipping
// need no host round trip. The step t is stats[3], the steps applied counting this one (also
// grad_norm.wgsl's), and its bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t are row
// t - firstStep of a table the host computed, so several steps go in one submission and a
// skipped one does not advance t.
override WG: u32 = 256;

struct Params {
  n: u32, stride: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32,
  firstStep: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;    // [n] adapter weights
@group(0) @binding(2) var<storage, read> grad: array<f32>;           // [n]
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;  // [n] m
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;  // [n] v
@group(0) @binding(5) var<storage, read> stats: array<f32>;          // [4] norm, clipScale, flag, applied
@group(0) @binding(6) var<storage, read> corrections: array<vec2<f32>>;  // [k] (bc1, bc2) for t = firstStep ..

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (stats[2] != 0.0) {
    return;
  }
  let gradScale = stats[1];
  let bc = corrections[u32(stats[3]) - params.firstStep];
  let decay = 1.0 - params.lr * params.weightDecay;
  let stepSize = params.lr / bc.x;
  let rootBc2 = sqrt(bc.y);
  for (var i = gid.x; i < params.n; i += params.stride) {
    let g = grad[i] * gradScale;
    let m = params.beta1 * moment1[i] + (1.0 - params.beta1) * g;
    let v = params.beta2 * moment2[i] + (1.0 - params.beta2) * g * g;
    moment1[i] = m;
    moment2[i] = v;
    // Decoupled weight decay first, as torch.optim.AdamW does.
    param[i] = param[i] * decay - stepSize * m / (sqrt(v) / rootBc2 + params.eps);
  }
}
