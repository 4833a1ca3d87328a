// Token embedding: gather rows of a table by token id, and its scatter-add backward.
//
// Token t reads its id from ids[offset + t], so the decode loop can point the embedding at the
// slot where the GPU sampler wrote the next token. An id >= vocab is clamped to vocab - 1, in the
// forward and the backward alike, so a bad id can never read or write out of bounds.
// `dim` must be a multiple of 4 (rows are moved as vec4s); dim4 = dim / 4.
// The forward's table may be one part of a vocabulary split by rows (a table larger than one
// binding): it holds rows [first, first + count), and tokens whose row lies elsewhere are left
// for another part's dispatch. The backward's dTable is always the whole table (first = 0).

override WG: u32 = 64;
// Vocabulary rows one backward workgroup owns; it scans every token id once for them.
override ROWS: u32 = 32;
// Backward adds into dTable instead of overwriting it.
override ACCUMULATE: bool = false;

struct Params { tokens: u32, dim4: u32, vocab: u32, offset: u32, stride: u32, first: u32, count: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;                 // [>= offset + tokens]
@group(0) @binding(2) var<storage, read> table: array<vec4<f32>>;         // [count, dim]: rows first..
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;     // [tokens, dim]
@group(0) @binding(4) var<storage, read> dOut: array<vec4<f32>>;          // [tokens, dim]
@group(0) @binding(5) var<storage, read_write> dTable: array<vec4<f32>>;  // [vocab, dim]

var<workgroup> tileRows: array<u32, WG>;

fn table_row(t: u32) -> u32 {
  return min(ids[params.offset + t], params.vocab - 1u);
}

// One invocation per output vec4, grid-strided over tokens * dim4.
@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n4 = params.tokens * params.dim4;
  for (var i = gid.x; i < n4; i += params.stride) {
    let t = i / params.dim4;
    let c = i - t * params.dim4;
    let row = table_row(t);
    if (row >= params.first && row - params.first < params.count) {
      out[i] = table[(row - params.first) * params.dim4 + c];
    }
  }
}

// Workgroup (x, y) owns vocabulary rows [x * ROWS, x * ROWS + ROWS) and vec4 column y * WG + lid.
// It reads the ids a tile at a time and adds the dOut rows of matching tokens in token order: no
// other workgroup touches these rows, so there are no atomics and the sum order is fixed.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let v0 = wid.x * ROWS;
  let v1 = min(v0 + ROWS, params.vocab);
  let c = wid.y * WG + lid;
  let ownsColumn = c < params.dim4;
  if (ownsColumn && !ACCUMULATE) {
    for (var v = v0; v < v1; v++) {
      dTable[v * params.dim4 + c] = vec4<f32>(0.0);
    }
  }
  for (var t0 = 0u; t0 < params.tokens; t0 += WG) {
    if (t0 + lid < params.tokens) {
      tileRows[lid] = table_row(t0 + lid);
    }
    workgroupBarrier();
    let count = min(WG, params.tokens - t0);
    if (ownsColumn) {
      for (var k = 0u; k < count; k++) {
        let v = tileRows[k];
        if (v >= v0 && v < v1) {
          let at = v * params.dim4 + c;
          dTable[at] = dTable[at] + dOut[(t0 + k) * params.dim4 + c];
        }
      }
    }
    workgroupBarrier();
  }
}
