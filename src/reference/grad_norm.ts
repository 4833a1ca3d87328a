/** Float64 twin of the gradient-norm kernel. */

/** [norm, clipScale, nonFinite]: the kernel's stats (norm over the finite elements only). */
export function gradNormRef(grads: ArrayLike<number>, maxNorm: number): [number, number, number] {
  let sumsq = 0;
  let nonFinite = 0;
  for (let i = 0; i < grads.length; i++) {
    const g = grads[i];
    if (Number.isFinite(g)) sumsq += g * g;
    else nonFinite = 1;
  }
  const norm = Math.sqrt(sumsq);
  return [norm, Math.min(1, maxNorm / (norm + 1e-6)), nonFinite];
}
