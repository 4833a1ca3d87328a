// y[r, c] += bias[c]: the q/k/v biases of Qwen2-style attention, after the projection matmul.
override WG: u32 = 256;

struct Params { n: u32, cols: u32, stride: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;       // [cols]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [rows, cols], n = rows * cols

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var i = gid.x; i < params.n; i += params.stride) {
    y[i] += bias[i % params.cols];
  }
}

// logits[banned[i]] = lowest f32, for i < count: tokens that must never be sampled (EOS when the
// caller bans it). Ids outside the vocabulary are ignored.
struct BanParams { count: u32, vocab: u32 }

@group(0) @binding(3) var<uniform> banParams: BanParams;
@group(0) @binding(4) var<storage, read> banned: array<u32>;            // [count]
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;      // [vocab]

@compute @workgroup_size(WG)
fn ban(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i < banParams.count && banned[i] < banParams.vocab) {
    logits[banned[i]] = -3.4028234e38;
  }
}
