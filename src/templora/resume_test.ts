/**
 * Resume determinism: a run stopped anywhere (mid-chunk, during training, during a snapshot
 * write, killed outright) and resumed from its snapshot folder writes exactly the text of a run
 * that never stopped, with the same training losses.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gpuTest, testGpu } from "../../kernels_test/helpers.ts";
import { STORIES260K } from "../../kernels_test/test_data.ts";
import { TextModel } from "../model/text_model.ts";
import { resolveTempLoraSettings, type TempLoraSettings } from "./settings.ts";
import { type CommitStep, loadSnapshot, saveSnapshot } from "./snapshot.ts";
import {
  resumeWithTempLora,
  type SnapshotSchedule,
  type WriterEvent,
  type WriterSummary,
  writeWithTempLora,
} from "./writer.ts";

/** Settings where training, KV refreshes (every 2 chunks) and window slides with sinks all occur. */
const SETTINGS = { window: 48, chunk: 12, epochs: 2, kvRefresh: 2, rank: 4, sink: 4 };
const OPTIONS = { maxTokens: 64, temperature: 0.9, topP: 0.95, seed: 11, banEos: true };
const PROMPT = "Once upon a time, a little fox";

interface Outcome {
  summary?: WriterSummary;
  error?: unknown;
  text: string;
}

/**
 * Drains a run; `stop` sees each event and may return "abort" (the run's signal) or "crash" (the
 * consumer stops pulling, as when the process dies).
 */
async function drive(
  start: (signal: AbortSignal) => AsyncGenerator<WriterEvent, WriterSummary>,
  stop: (e: WriterEvent) => "abort" | "crash" | undefined = () => undefined,
): Promise<Outcome> {
  const controller = new AbortController();
  const it = start(controller.signal);
  let text = "";
  try {
    for (;;) {
      const next = await it.next();
      if (next.done) return { summary: next.value, text };
      if (next.value.type === "token") text += next.value.text;
      const action = stop(next.value);
      if (action === "abort") controller.abort();
      if (action === "crash") {
        await it.return(undefined as never);
        return { text };
      }
    }
  } catch (error) {
    await it.return(undefined as never).catch(() => {});
    return { error, text };
  }
}

/** Snapshots to `dir`; with `fail`, save number `fail.save` (0-based) crashes at `fail.step`. */
function schedule(
  dir: string,
  everyChunks?: number,
  fail?: { save: number; step: CommitStep },
): SnapshotSchedule {
  let saves = 0;
  return {
    everyChunks,
    save: (snapshot) => {
      const n = saves++;
      return saveSnapshot(dir, snapshot, (step) => {
        if (n === fail?.save && step === fail.step) throw new Error(`simulated crash at ${step}`);
      });
    },
  };
}

gpuTest(
  "resume: a run stopped anywhere and resumed writes exactly the uninterrupted text",
  async () => {
    const { gpu } = await testGpu();
    const lm = await TextModel.load(STORIES260K, { gpu });
    const root = await Deno.makeTempDir({ prefix: "templora_resume_" });
    try {
      const settings: TempLoraSettings = resolveTempLoraSettings(lm.config, SETTINGS);
      const fresh =
        (dir?: string, every?: number, fail?: { save: number; step: CommitStep }) =>
        (signal: AbortSignal) =>
          writeWithTempLora(lm, PROMPT, { ...OPTIONS, signal }, settings, {
            snapshots: dir ? schedule(dir, every, fail) : undefined,
          });
      const resumed = (dir: string, every?: number) =>
        async function* (signal: AbortSignal) {
          return yield* resumeWithTempLora(lm, await loadSnapshot(dir), {
            signal,
            snapshots: schedule(dir, every),
          });
        };
      const reference = await drive(fresh());
      gpu.memory.trim();
      const idle = gpu.memory.bytesInUse;
      const nothingHeld = (what: string) => {
        gpu.memory.trim();
        assert.equal(gpu.memory.bytesInUse, idle, `${what}: nothing left on the GPU`);
      };
      const want = reference.summary!;
      assert.equal(want.tokens.length, 64);
      assert.equal(want.chunksTrained, 5);
      assert.equal(want.text, reference.text);

      const same = (got: Outcome, what: string) => {
        assert.equal(got.error, undefined, `${what}: ${got.error}`);
        const s = got.summary!;
        assert.equal(s.text, want.text, what);
        assert.equal(got.text, want.text, `${what}: streamed text`);
        assert.deepEqual(s.tokens, want.tokens, what);
        assert.equal(s.finishReason, "length", what);
        assert.equal(s.chunksTrained, want.chunksTrained, what);
        assert.deepEqual(s.chunkLosses, want.chunkLosses, `${what}: training losses`);
      };

      // One story stopped three times: mid-chunk 0 (token 5), mid-chunk 2 (token 30, after a KV
      // refresh), and during chunk 3's training; each stop snapshots on abort, each resume goes on.
      const chain = join(root, "chain");
      const first = await drive(
        fresh(chain),
        (e) => e.type === "token" && e.index === 5 ? "abort" : undefined,
      );
      assert.equal(first.summary?.finishReason, "abort");
      assert.ok(first.summary!.tokens.length < 12);
      const second = await drive(
        resumed(chain),
        (e) => e.type === "token" && e.index === 30 ? "abort" : undefined,
      );
      assert.equal(second.summary?.finishReason, "abort");
      assert.ok(second.summary!.resumedTokens === first.summary!.tokens.length);
      const third = await drive(
        resumed(chain),
        (e) => e.type === "train" && e.chunk === 3 && e.epoch === 0 ? "abort" : undefined,
      );
      assert.equal(third.summary?.finishReason, "abort");
      assert.equal(
        third.summary!.chunksTrained,
        4,
        "the chunk's training finishes before stopping",
      );
      same(await drive(resumed(chain)), "stopped three times");

      // Killed while training on the fifth chunk: the snapshot taken after four chunks (every 2)
      // is the last one, and resuming from it writes the fifth chunk again, identically.
      const killed = join(root, "killed");
      const crash = await drive(
        fresh(killed, 2),
        (e) => e.type === "train" && e.chunk === 4 ? "crash" : undefined,
      );
      assert.equal(crash.summary, undefined);
      nothingHeld("killed during training");
      assert.equal((await loadSnapshot(killed)).progress.chunksTrained, 4);
      same(await drive(resumed(killed)), "killed during training");

      // Killed in the middle of the second snapshot write: after its files were written, and
      // after the old snapshot was moved aside. The first snapshot (after two chunks) survives.
      for (const step of ["staged", "moved-aside"] as const) {
        const dir = join(root, step);
        const failed = await drive(fresh(dir, 2, { save: 1, step }));
        assert.match(String(failed.error), /simulated crash/);
        nothingHeld(`a failed snapshot write (${step})`);
        assert.equal((await loadSnapshot(dir)).progress.chunksTrained, 2, step);
        same(await drive(resumed(dir)), `killed during a snapshot write (${step})`);
        // And the next write after the crash recovers the folder.
        assert.equal((await loadSnapshot(dir)).tokens.length, want.promptTokens + 64);
      }
    } finally {
      lm.dispose();
      await Deno.remove(root, { recursive: true });
    }
  },
);
