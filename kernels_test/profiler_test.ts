import assert from "node:assert/strict";
import { gpuTest, poisoned, readWritten, seededRng, testGpu } from "./helpers.ts";
import { CopyOp } from "../src/ops/copy.ts";
import { SwiGluOp } from "../src/ops/swiglu.ts";
import { DispatchProfiler } from "../src/gpu/profiler.ts";
import { Recorder } from "../src/gpu/recorder.ts";
import { uploadTensor } from "../src/gpu/tensor.ts";
import { KernelUsageError } from "../src/gpu/errors.ts";

gpuTest("DispatchProfiler times each dispatch by kernel and changes no result", async () => {
  const { gpu, registry } = await testGpu();
  if (!gpu.capabilities.timestampQuery) {
    assert.throws(() => new DispatchProfiler(gpu), KernelUsageError);
    return;
  }
  const rng = seededRng("profiler");
  const copy = await CopyOp.create(registry);
  const swiglu = await SwiGluOp.create(registry);
  const shape = [5, 172];
  const gate = uploadTensor(gpu, rng.normals(5 * 172), shape);
  const up = uploadTensor(gpu, rng.normals(5 * 172), shape);
  // More copies than one query set holds, and two submissions, so batches roll over.
  const copies = 1100;
  const run = async (profiler?: DispatchProfiler) => {
    const recorder = new Recorder(gpu);
    recorder.profiler = profiler;
    const out = poisoned(gpu, shape);
    const moved = poisoned(gpu, shape);
    for (let i = 0; i < 3; i++) swiglu.recordForward(recorder, gate, up, out);
    recorder.submit();
    for (let i = 0; i < copies; i++) {
      copy.record(recorder, i % 2 ? moved : out, i % 2 ? out : moved);
    }
    recorder.submit();
    const result = [await readWritten(gpu, out, "out"), await readWritten(gpu, moved, "moved")];
    out.destroy();
    moved.destroy();
    recorder.destroy();
    return result;
  };
  const plain = await run();
  const before = gpu.memory.bytesInUse;
  const profiler = new DispatchProfiler(gpu);
  const timed = await run(profiler);
  assert.deepEqual(timed, plain);
  const times = await profiler.read();
  assert.deepEqual(times.map((t) => t.dispatches).sort((a, b) => a - b), [3, copies]);
  const copyTime = times.find((t) => t.dispatches === copies)!;
  assert.match(copyTime.label, /copy/);
  assert.match(times.find((t) => t.dispatches === 3)!.label, /swiglu/);
  for (const t of times) {
    assert.ok(t.milliseconds > 0 && Number.isFinite(t.milliseconds), t.label);
    // The slowest dispatch is one of them: above the mean, within the sum.
    assert.ok(
      t.slowest * (1 + 1e-9) >= t.milliseconds / t.dispatches && t.slowest <= t.milliseconds,
      t.label,
    );
  }
  assert.deepEqual(await profiler.read(), [], "a second read starts afresh");
  profiler.destroy();
  assert.equal(gpu.memory.bytesInUse, before, "the profiler's buffers are freed");
  gate.destroy();
  up.destroy();
});
