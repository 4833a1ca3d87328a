import assert from "node:assert/strict";
import { GpuLimitError, KernelUsageError, ShapeError } from "../gpu/errors.ts";
import type { Recorder } from "../gpu/recorder.ts";
import { type DType, Tensor } from "../gpu/tensor.ts";
import {
  expectArgument,
  expectDtype,
  expectMultiple,
  expectPositive,
  expectRows,
  expectShape,
  expectSize,
  expectU32,
  expectWindow,
  splitGrid,
  strideGrid,
} from "./shapes.ts";

/** A tensor over a stand-in buffer: the checks read only shapes and dtypes. */
const tensor = (shape: number[], dtype: DType = "f32") =>
  new Tensor({ size: 1 << 20 } as GPUBuffer, shape, dtype);

const throwsExactly = (fn: () => unknown, type: typeof ShapeError, message: string) =>
  assert.throws(fn, (e: unknown) => e instanceof type && e.message === message);

Deno.test("shape checks name the op, the tensor, the expected and the actual shape", () => {
  const x = tensor([3, 64]);
  assert.deepEqual(expectShape("op", "x", x, "f32", ["rows", 64]), [3, 64]);
  throwsExactly(
    () => expectShape("rmsnorm forward", "weight", tensor([32]), "f32", [64]),
    ShapeError,
    "rmsnorm forward: weight must be f32 [64], got f32 [32]",
  );
  throwsExactly(
    () => expectShape("matvec", "W", tensor([3, 8], "u32"), ["f32", "f16"], ["N", "K"]),
    ShapeError,
    "matvec: W must be f32 or f16 [N, K], got u32 [3, 8]",
  );
  throwsExactly(
    () => expectShape("op", "x", tensor([3, 4, 64]), "f32", ["rows", 64]),
    ShapeError,
    "op: x must be f32 [rows, 64], got f32 [3, 4, 64]",
  );
  expectSize("op", "y", tensor([1, 6]), "f32", 6);
  throwsExactly(
    () => expectSize("op", "y", tensor([5]), "f32", 6),
    ShapeError,
    "op: y must be f32 with 6 elements, got f32 [5]",
  );
  assert.deepEqual(expectRows("op", "logits", tensor([2, 3, 10]), "f32"), [6, 10]);
  assert.deepEqual(expectRows("op", "logits", tensor([10]), "f32"), [1, 10]);
  assert.deepEqual(expectRows("op", "logits", tensor([4, 0]), "f32"), [0, 0]);
  throwsExactly(
    () => expectRows("op", "logits", tensor([]), "f32"),
    ShapeError,
    "op: logits must be f32 [..., width], got f32 []",
  );
  throwsExactly(
    () => expectDtype("op", "ids", tensor([4]), "u32"),
    ShapeError,
    "op: ids must be u32, got f32 [4]",
  );
  throwsExactly(
    () => expectMultiple("op", "x", tensor([2, 6]), "dim", 6, 4),
    ShapeError,
    "op: x f32 [2, 6]: dim = 6 must be a multiple of 4",
  );
  expectMultiple("op", "x", tensor([0]), "size", 0, 4);
  throwsExactly(
    () => expectPositive("op", "q", tensor([0, 2, 4]), "tokens", 0),
    ShapeError,
    "op: q f32 [0, 2, 4]: tokens = 0 must be positive",
  );
});

Deno.test("argument checks throw KernelUsageError with the value that came", () => {
  throwsExactly(
    () => expectArgument("rmsnorm forward", "eps", false, ">= 0", -1),
    KernelUsageError,
    "rmsnorm forward: eps must be >= 0, got -1",
  );
  expectU32("op", "seed", 0xffffffff);
  for (const bad of [-1, 1.5, 2 ** 32, NaN]) {
    throwsExactly(
      () => expectU32("op", "seed", bad),
      KernelUsageError,
      `op: seed must be a u32, got ${bad}`,
    );
  }
  expectWindow("op", "ids", 2, 3, 5, "ids");
  throwsExactly(
    () => expectWindow("op", "ids", 2, 4, 5, "ids"),
    KernelUsageError,
    "op: ids [2, 6) runs past the 5 ids",
  );
  throwsExactly(
    () => expectWindow("op", "rows", -1, 2, 5, "rows"),
    KernelUsageError,
    "op: rows starts at -1 with 2 rows",
  );
});

Deno.test("grids split past the per-dimension limit and stride under a cap", () => {
  const rec = { gpu: { limits: { maxComputeWorkgroupsPerDimension: 100 } } } as unknown as Recorder;
  assert.deepEqual(splitGrid(rec, 7), [7, 1]);
  assert.deepEqual(splitGrid(rec, 100), [100, 1]);
  assert.deepEqual(splitGrid(rec, 101), [100, 2]);
  assert.deepEqual(splitGrid(rec, 0), [1, 0]);
  assert.throws(() => splitGrid(rec, 100 * 100 + 1), GpuLimitError);
  assert.deepEqual(strideGrid(1000, 64, 4), { groups: 4, stride: 256 });
  assert.deepEqual(strideGrid(100, 64, 4), { groups: 2, stride: 128 });
  assert.deepEqual(strideGrid(0, 64, 4), { groups: 1, stride: 64 });
});
