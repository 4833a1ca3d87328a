// Rotary position embedding on [rows, heads, headDim], token t at position pos0 + t, and its
// backward (the inverse rotation, dX = R^T dOut). One invocation per rotated pair.
//
// Angles are reduced in turns, not radians, so they stay accurate at large positions: the host
// gives each pair's frequency f_i = base^(-2i/headDim) / (2 pi) in turns per position, split as
// hi + mid + lo where hi and mid carry 8 significant bits. With pos = 256 q + r (q < 2^16,
// r < 2^8), q * 256 hi, q * 256 mid, r * hi and r * mid are exact in f32 and so are their
// fractional parts; only pos * lo (about 2^-16 of the angle) rounds. So the angle is good to
// about 1e-7 turns for every pos < 2^24. cos and sin of the reduced angle come from polynomials
// on a quarter turn (cos_sin_turns) rather than the built-ins, whose error WGSL leaves to the
// implementation (Vulkan allows 2^-11 absolute; SwiftShader's are that coarse).
//
// The source and destination take row offsets (srcRow, dstRow) so K can be rotated straight into
// a KV cache [capacity, heads, headDim] at rows past .. past + tokens - 1. forward_f16 writes an
// f16 cache (pairs packed two to a u32 word, element 2i in the low half): one invocation per
// word, each of its two elements rotated with its own pair (for half-split pairs they are two).

override WG: u32 = 64;
// true: llama2.c / Meta pairs (2i, 2i + 1); false: Hugging Face half-split pairs (i, i + headDim/2).
override INTERLEAVED: bool = true;

// pairs = tokens * heads * headDim / 2; half = headDim / 2. The *_qk entries take a second tensor
// of the same tokens: pairs2 = tokens * heads2 * headDim / 2 more pairs, at element at2 of `data`
// (backward_in_place_qk) or from src to dst (forward_qkv, which then copies valuePairs pairs
// more, 0 or pairs2, unrotated, from element vSrc of src to element vDst of dst: the values).
struct Params {
  pairs: u32,
  heads: u32,
  half: u32,
  pos0: u32,
  srcRow: u32,
  dstRow: u32,
  stride: u32,
  pairs2: u32,
  heads2: u32,
  at2: u32,
  valuePairs: u32,
  vSrc: u32,
  vDst: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> freqs: array<vec4<f32>>;     // [headDim / 2] (hi, mid, lo, 0)
@group(0) @binding(2) var<storage, read> src: array<f32>;             // [srcRows, heads, headDim]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;       // [dstRows, heads, headDim]
@group(0) @binding(4) var<storage, read_write> data: array<f32>;      // [rows, heads, headDim], in place
@group(0) @binding(5) var<storage, read_write> dst16: array<u32>;     // [dstRows, heads, headDim] f16 pairs

//!include "rope_angles.wgsl"

// Where pair k lives: x = its two element offsets within a row of one head, y = token * heads + head.
fn pair_at(k: u32) -> vec3<u32> {
  let i = k % params.half;
  let tokenHead = k / params.half;
  if (INTERLEAVED) {
    return vec3<u32>(2u * i, 2u * i + 1u, tokenHead);
  }
  return vec3<u32>(i, i + params.half, tokenHead);
}

fn rotate_copy(k: u32, direction: f32, heads: u32) {
  let at = pair_at(k);
  let token = at.z / heads;
  let cs = cos_sin(params.pos0 + token, k % params.half);
  let rowLen = 2u * params.half;
  let srcAt = (params.srcRow * heads + at.z) * rowLen;
  let dstAt = (params.dstRow * heads + at.z) * rowLen;
  let v = rotate(vec2<f32>(src[srcAt + at.x], src[srcAt + at.y]), cs, direction);
  dst[dstAt + at.x] = v.x;
  dst[dstAt + at.y] = v.y;
}

// Element d of row `srcAt` (token `token` of src) after the forward rotation.
fn rotated_element(srcAt: u32, d: u32, token: u32) -> f32 {
  var i = d / 2u;
  var member = d % 2u;
  if (!INTERLEAVED) {
    i = d % params.half;
    member = d / params.half;
  }
  let at = pair_at(i);
  let cs = cos_sin(params.pos0 + token, i);
  let v = rotate(vec2<f32>(src[srcAt + at.x], src[srcAt + at.y]), cs, 1.0);
  return select(v.x, v.y, member == 1u);
}

// Word k of the f16 destination: elements 2w, 2w + 1 (w = k % half) of row k / half.
fn rotate_copy_f16(k: u32) {
  let tokenHead = k / params.half;
  let w = k % params.half;
  let token = tokenHead / params.heads;
  let rowLen = 2u * params.half;
  let srcAt = (params.srcRow * params.heads + tokenHead) * rowLen;
  let dstAt = (params.dstRow * params.heads + tokenHead) * rowLen;
  let x = rotated_element(srcAt, 2u * w, token);
  let y = rotated_element(srcAt, 2u * w + 1u, token);
  dst16[dstAt / 2u + w] = pack2x16float(vec2<f32>(x, y));
}

// `origin`: the element where the tensor's row 0 starts in data.
fn rotate_in_place(k: u32, direction: f32, heads: u32, origin: u32) {
  let at = pair_at(k);
  let token = at.z / heads;
  let cs = cos_sin(params.pos0 + token, k % params.half);
  let base = origin + (params.srcRow * heads + at.z) * 2u * params.half;
  let v = rotate(vec2<f32>(data[base + at.x], data[base + at.y]), cs, direction);
  data[base + at.x] = v.x;
  data[base + at.y] = v.y;
}

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs; k += params.stride) {
    rotate_copy(k, 1.0, params.heads);
  }
}

// pairs counts words here: tokens * heads * headDim / 2 as well.
@compute @workgroup_size(WG)
fn forward_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs; k += params.stride) {
    rotate_copy_f16(k);
  }
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs; k += params.stride) {
    rotate_copy(k, -1.0, params.heads);
  }
}

// In place on `data`; srcRow is the row offset.
@compute @workgroup_size(WG)
fn forward_in_place(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs; k += params.stride) {
    rotate_in_place(k, 1.0, params.heads, 0u);
  }
}

@compute @workgroup_size(WG)
fn backward_in_place(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs; k += params.stride) {
    rotate_in_place(k, -1.0, params.heads, 0u);
  }
}

// Pair k of the values copied as they are, from vSrc (at srcRow) in src to vDst (at dstRow) in dst.
fn copy_value_pair(k: u32) {
  let at = pair_at(k);
  let rowLen = 2u * params.half;
  let srcAt = params.vSrc + (params.srcRow * params.heads2 + at.z) * rowLen;
  let dstAt = params.vDst + (params.dstRow * params.heads2 + at.z) * rowLen;
  dst[dstAt + at.x] = src[srcAt + at.x];
  dst[dstAt + at.y] = src[srcAt + at.y];
}

// Queries rotated in place on data, keys rotated from src into dst (a KV cache, at dstRow), and
// values copied from src into dst, at once.
@compute @workgroup_size(WG)
fn forward_qkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs + params.pairs2 + params.valuePairs; k += params.stride) {
    if (k < params.pairs) {
      rotate_in_place(k, 1.0, params.heads, 0u);
    } else if (k < params.pairs + params.pairs2) {
      rotate_copy(k - params.pairs, 1.0, params.heads2);
    } else {
      copy_value_pair(k - params.pairs - params.pairs2);
    }
  }
}

// The gradients of queries and of keys in place, both in data (the keys' from element at2).
@compute @workgroup_size(WG)
fn backward_in_place_qk(@builtin(global_invocation_id) gid: vec3<u32>) {
  for (var k = gid.x; k < params.pairs + params.pairs2; k += params.stride) {
    if (k < params.pairs) {
      rotate_in_place(k, -1.0, params.heads, 0u);
    } else {
      rotate_in_place(k - params.pairs, -1.0, params.heads2, params.at2);
    }
  }
}
