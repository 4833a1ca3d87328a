import { assertClose, gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { SwiGluOp } from "../src/ops/swiglu.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { swigluBackward, swigluForward } from "../src/reference/swiglu.ts";
import { dot, finiteDifferences } from "../src/reference/finite_difference.ts";

// [tokens, hidden]: one token, the tiny model's hidden size, a size past one grid stride.
const SHAPES = [[1, 172], [37, 172], [1, 4], [6200, 172]];
const EXTREMES = [-1000, -100, -30, -10, 0, 10, 30, 100, 1000];

/** Throws unless every element is within `tol` of the reference relative to itself. */
function assertEachClose(out: Float32Array, ref: Float64Array, what: string, tol = 1e-5): void {
  for (let i = 0; i < ref.length; i++) {
    if (!(Math.abs(out[i] - ref[i]) <= tol * Math.abs(ref[i]) + 1e-30)) {
      throw new Error(`${what}: element ${i} is ${out[i]}, expected ${ref[i]}`);
    }
  }
}

gpuTest("swiglu forward and backward match the float64 twin", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("swiglu");
  const op = await SwiGluOp.create(registry);
  for (const [tokens, hidden] of SHAPES) {
    const what = `swiglu [${tokens}, ${hidden}]`;
    const shape = [tokens, hidden];
    const n = tokens * hidden;
    const gateData = rng.normals(n, 3);
    const upData = rng.normals(n);
    const gData = rng.normals(n);
    const gate = uploadTensor(gpu, gateData, shape);
    const up = uploadTensor(gpu, upData, shape);
    const dOut = uploadTensor(gpu, gData, shape);
    const out = poisoned(gpu, shape);
    const dGate = poisoned(gpu, shape);
    const dUp = poisoned(gpu, shape);
    op.recordForward(recorder, gate, up, out);
    op.recordBackward(recorder, dOut, gate, up, dGate, dUp);
    recorder.submit();
    const ref = swigluBackward(gData, gateData, upData);
    assertClose(await readWritten(gpu, out, what), swigluForward(gateData, upData), what);
    assertClose(await readWritten(gpu, dGate, `${what} dGate`), ref.dGate, `${what} dGate`);
    assertClose(await readWritten(gpu, dUp, `${what} dUp`), ref.dUp, `${what} dUp`);
    for (const t of [gate, up, dOut, out, dGate, dUp]) t.destroy();
  }
});

gpuTest("swiglu is stable for large |gate|, element by element", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const rng = seededRng("swiglu extremes");
  const op = await SwiGluOp.create(registry);
  const n = EXTREMES.length * 4;
  const gateData = new Float32Array(n).map((_, i) => EXTREMES[i % EXTREMES.length]);
  const upData = rng.normals(n);
  const gData = rng.normals(n);
  const [gate, up, dOut] = [gateData, upData, gData].map((d) => uploadTensor(gpu, d, [n]));
  const [out, dGate, dUp] = [0, 1, 2].map(() => poisoned(gpu, [n]));
  op.recordForward(recorder, gate, up, out);
  op.recordBackward(recorder, dOut, gate, up, dGate, dUp);
  recorder.submit();
  const ref = swigluBackward(gData, gateData, upData);
  assertEachClose(await readWritten(gpu, out, "out"), swigluForward(gateData, upData), "out");
  assertEachClose(await readWritten(gpu, dGate, "dGate"), ref.dGate, "extreme dGate");
  assertEachClose(await readWritten(gpu, dUp, "dUp"), ref.dUp, "extreme dUp");
  for (const t of [gate, up, dOut, out, dGate, dUp]) t.destroy();
});

Deno.test("swiglu backward twin matches finite differences of the forward twin", () => {
  const rng = seededRng("swiglu finite differences");
  const n = 40;
  const gate = Float64Array.from(rng.normals(n, 3));
  gate.set([-40, -12, 12, 40]);
  const up = Float64Array.from(rng.normals(n));
  const w = rng.normals(n);
  const { dGate, dUp } = swigluBackward(w, gate, up);
  const byGate = finiteDifferences((g) => dot(w, swigluForward(g, up)), gate);
  const byUp = finiteDifferences((u) => dot(w, swigluForward(gate, u)), up);
  assertClose(dGate, byGate, "swiglu fd dGate", 1e-7);
  assertClose(dUp, byUp, "swiglu fd dUp", 1e-7);
});

gpuTest("swiglu op rejects mismatched shapes", async () => {
  const { gpu, registry, recorder } = await testGpu();
  const op = await SwiGluOp.create(registry);
  const a = uploadTensor(gpu, new Float32Array(8), [2, 4]);
  const b = uploadTensor(gpu, new Float32Array(8), [4, 2]);
  let threw = false;
  try {
    op.recordForward(recorder, a, b, a);
  } catch {
    threw = true;
  }
  for (const t of [a, b]) t.destroy();
  if (!threw) throw new Error("swiglu accepted [2, 4] with [4, 2]");
});
