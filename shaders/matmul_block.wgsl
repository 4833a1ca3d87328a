// The register block of the tiled matmuls (matmul.wgsl, quant_matmul.wgsl): each thread of a
// WG_X x WG_Y workgroup accumulates a TM x TN block of C from the workgroup tiles the includer
// fills, tileA [TK][BM / 4] (op(A)ᵀ, 4 rows a vec4) and tileB [TK][BN / 4] (4 columns a vec4),
// with BM = TM WG_Y and BN = TN WG_X, and stores it through the includer's
// store(row, col, vec4). The block is a private array indexed only inside unrolled loops, so
// compilers that do not unroll loops themselves (Mesa's llvmpipe) keep it in registers instead
// of spilling it. Each element is one sum over k in order whatever the block's shape: shapes
// change speed, never a result.
override TM: u32 = 8;  // rows of C per thread, a multiple of 4
override TN: u32 = 8;  // columns of C per thread, a multiple of 4

const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;

var<private> acc: array<vec4<f32>, TM * TN4>;  // [TM][TN / 4]: row i, columns 4j .. 4j + 3

// Adds the tiles' product into the thread's block.
fn multiplyTiles(lid: vec3<u32>) {
  for (var kk = 0u; kk < TK; kk++) {
    var av: array<vec4<f32>, TM4>;
    var bv: array<vec4<f32>, TN4>;
    //!unroll
    for (var j = 0u; j < TN4; j++) { bv[j] = tileB[kk * BN4 + TN4 * lid.x + j]; }
    //!unroll
    for (var i = 0u; i < TM4; i++) { av[i] = tileA[kk * BM4 + TM4 * lid.y + i]; }
    //!unroll
    for (var i = 0u; i < TM; i++) {
      //!unroll
      for (var j = 0u; j < TN4; j++) {
        acc[i * TN4 + j] = fma(vec4<f32>(av[i / 4u][i % 4u]), bv[j], acc[i * TN4 + j]);
      }
    }
  }
}

fn storeBlock(wg: vec3<u32>, lid: vec3<u32>) {
  let r = wg.y * BM + TM * lid.y;
  let col = wg.x * BN + TN * lid.x;
  //!unroll
  for (var i = 0u; i < TM; i++) {
    //!unroll
    for (var j = 0u; j < TN4; j++) { store(r + i, col + 4u * j, acc[i * TN4 + j]); }
  }
}
