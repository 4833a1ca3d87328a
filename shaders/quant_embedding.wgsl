// Token embedding gather from a quantized table [vocab, dim] kept in its GGUF blocks
// (quant_blocks.wgsl; QTYPE picks the type): out[t, :] is row
// ids[offset + t] dequantized. As in embedding.wgsl, an id >= vocab is clamped to vocab - 1, and
// token t's id is read at ids[offset + t] so decode can point at the sampler's slot. dim is a
// multiple of the block size; dim4 = dim / 4. As there, the table may be the part of a split
// vocabulary holding rows [first, first + count); tokens whose row lies elsewhere are skipped.
override WG: u32 = 64;

//!include "quant_blocks.wgsl"

// rowBytes: bytes of one row of blocks; stride: invocations in the grid.
struct Params {
  tokens: u32, dim4: u32, vocab: u32, offset: u32, stride: u32, rowBytes: u32, first: u32, count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;              // [>= offset + tokens]
@group(0) @binding(2) var<storage, read> qweight: array<u32>;          // [ceil(count rowBytes / 4)] table [count, dim]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;  // [tokens, dim]

// One invocation per output vec4, grid-strided over tokens * dim4.
@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n4 = params.tokens * params.dim4;
  for (var i = gid.x; i < n4; i += params.stride) {
    let t = i / params.dim4;
    let col = 4u * (i - t * params.dim4);
    let row = min(ids[params.offset + t], params.vocab - 1u);
    if (row >= params.first && row - params.first < params.count) {
      out[i] = q_values4(q_block_at(row - params.first, col, params.rowBytes), col % QK);
    }
  }
}
