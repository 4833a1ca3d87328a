/**
 * Every kernel test (kernels_test/*_test.ts, unchanged) in headless Chromium on its WebGPU
 * (SwiftShader: Dawn and Tint), one step per test. `deno task test:browser` runs it.
 * TEMPLORA_SEED is passed on, so a seed printed here replays in Deno and the other way round.
 */
import { launchChromium, openPage, waitForTitle } from "./driver.ts";
import { serveStatic } from "./static_server.ts";
import {
  KERNEL_BUNDLE_PATH,
  KERNEL_PAGE_PATH,
  kernelTestBundle,
  modulePage,
  REPO_PREFIX,
  SHARED_PREFIX,
} from "./bundles.ts";
import { stopBundler } from "../tools/web_build.ts";
import type { PageTestResult } from "./harness.ts";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../", import.meta.url));
const SHARED = Deno.env.get("TEMPLORA_SHARED_DIR") ??
  fileURLToPath(new URL("../../shared/", import.meta.url));

Deno.test({
  name: "kernel tests in headless Chromium (WebGPU on SwiftShader)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const script = await kernelTestBundle();
    await stopBundler();
    const server = await serveStatic({
      mounts: { [REPO_PREFIX]: REPO, [SHARED_PREFIX]: SHARED },
      files: new Map([
        [KERNEL_BUNDLE_PATH, script],
        [KERNEL_PAGE_PATH, modulePage("kernel tests", "browser_kernels.js")],
      ]),
    });
    const session = await launchChromium();
    try {
      const { page, problems } = await openPage(session);
      const env: Record<string, string> = {};
      const seed = Deno.env.get("TEMPLORA_SEED");
      if (seed) env.TEMPLORA_SEED = seed;
      await page.goto(
        `${server.origin}${KERNEL_PAGE_PATH}?env=${encodeURIComponent(JSON.stringify(env))}`,
      );
      await waitForTitle(page, problems, "ready");
      const adapter = await page.evaluate(async () => {
        const a = await navigator.gpu.requestAdapter();
        return a ? `${a.info.vendor} ${a.info.architecture}` : "none";
      });
      console.log(`  adapter: ${adapter}`);
      const tests = await page.evaluate(() =>
        (globalThis as unknown as {
          __temploraHarness: { list(): { name: string; ignore: boolean }[] };
        })
          .__temploraHarness.list()
      );
      if (tests.length === 0) throw new Error("the bundle registered no test");
      const filter = Deno.env.get("TEMPLORA_BROWSER_FILTER");
      for (const test of tests) {
        const ignore = test.ignore || (filter !== undefined && !test.name.includes(filter));
        await t.step({
          name: test.name,
          ignore,
          fn: async () => {
            const result: PageTestResult = await page.evaluate(
              (name: string) =>
                (globalThis as unknown as {
                  __temploraHarness: { run(n: string): Promise<PageTestResult> };
                }).__temploraHarness.run(name),
              test.name,
            );
            for (const line of result.logs) console.log(line);
            console.log(
              `  (waited ${result.compileSeconds.toFixed(1)} s on pipeline compiles, ` +
                `${result.gpuSeconds.toFixed(1)} s on GPU work)`,
            );
            if (!result.ok) throw new Error(result.error);
          },
        });
      }
      if (problems.errors.length > 0) {
        throw new Error(`the page reported errors:\n${problems.errors.join("\n")}`);
      }
    } finally {
      await session.close();
      await server.close();
    }
  },
});
