/**
 * The model check (browser/model_check.ts) in Deno and in headless Chromium: stories260K loaded
 * from a URL in the page, from its path in Deno; the greedy text must be the same token for
 * token, and every Temp-Lora training step's loss the same to 1e-4. The page runs the check
 * against the library bundle of `deno task build:web` (dist/templora.js), built afresh.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { launchChromium, openPage, waitForTitle } from "./driver.ts";
import { serveStatic } from "./static_server.ts";
import { modelCheckBundle, modulePage, REPO_PREFIX } from "./bundles.ts";
import { type ModelCheckResult, runModelCheck } from "./model_check.ts";
import { buildLibrary, stopBundler } from "../tools/web_build.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url));
const MODEL = "models/stories260K/stories260K.bin";

/** Losses may differ by float rounding between the two WebGPU implementations, by this much. */
const LOSS_TOLERANCE = 1e-4;

Deno.test({
  name: "stories260K in Chromium writes Deno's greedy text and trains to Deno's losses",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const deno = await runModelCheck(`${REPO}${MODEL}`);
    const library = await buildLibrary();
    const script = await modelCheckBundle("./templora.js");
    await stopBundler();
    const server = await serveStatic({
      mounts: { [REPO_PREFIX]: REPO },
      files: new Map([
        ["/check/model.js", script],
        ["/check/templora.js", library],
        ["/check/index.html", modulePage("model check", "model.js")],
      ]),
    });
    const session = await launchChromium();
    let page: ModelCheckResult;
    try {
      const opened = await openPage(session);
      await opened.page.goto(`${server.origin}/check/`);
      await waitForTitle(opened.page, opened.problems, "ready");
      page = await opened.page.evaluate(
        (url: string) =>
          (globalThis as unknown as {
            temploraModelCheck: { runModelCheck(u: string): Promise<ModelCheckResult> };
          }).temploraModelCheck.runModelCheck(url),
        `${server.origin}${REPO_PREFIX}${MODEL}`,
      );
      assert.deepEqual(opened.problems.errors, [], "the page reported errors");
    } finally {
      await session.close();
      await server.close();
    }
    console.log(`  Deno: ${deno.adapter}; Chromium: ${page.adapter}`);
    console.log(
      `  greedy (${deno.greedyTokens.length} tokens): ${
        JSON.stringify(deno.greedyText.slice(0, 80))
      }...`,
    );
    console.log(`  losses Deno     ${deno.losses.map((l) => l.toFixed(6)).join(" ")}`);
    console.log(`  losses Chromium ${page.losses.map((l) => l.toFixed(6)).join(" ")}`);
    assert.equal(deno.greedyTokens.length, 200);
    assert.deepEqual(page.greedyTokens, deno.greedyTokens, "greedy tokens differ");
    assert.equal(page.greedyText, deno.greedyText);
    assert.deepEqual(page.writerTokens, deno.writerTokens, "Temp-Lora run's tokens differ");
    assert.ok(deno.losses.length >= 4, `${deno.losses.length} training steps`);
    assert.equal(page.losses.length, deno.losses.length);
    for (const [i, loss] of deno.losses.entries()) {
      assert.ok(Number.isFinite(loss) && loss > 0, `step ${i}: loss ${loss}`);
      const diff = Math.abs(page.losses[i] - loss);
      assert.ok(
        diff <= LOSS_TOLERANCE,
        `step ${i}: Chromium ${page.losses[i]}, Deno ${loss} (${diff})`,
      );
    }
  },
});
