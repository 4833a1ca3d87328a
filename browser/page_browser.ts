/**
 * The writing page (examples/web/) in headless Chromium, served two ways: by `deno task serve`
 * (at `/`) and by a static server (the files `deno task build:web` writes). In each, both engines
 * write a story with stories260K: in the page on the browser's WebGPU, and through the server's
 * API (from the static page, across origins with --allow-origin). Greedy writing must give the
 * same text in all four, the chart must show training losses, and the page must log no error.
 * With TEMPLORA_SCREENSHOT=FILE the page served by `deno task serve` is saved as a PNG.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { Page } from "puppeteer-core";
import { launchChromium, openPage, type PageProblems } from "./driver.ts";
import { serveStatic } from "./static_server.ts";
import { buildPage, stopBundler } from "../tools/web_build.ts";

const REPO = fileURLToPath(new URL("../", import.meta.url));

/** What each run writes: short, greedy, trained in small chunks. */
const FIELDS: Record<string, string> = {
  prompt: "Once upon a time",
  tokens: "48",
  temperature: "0",
  seed: "7",
  chunk: "16",
  epochs: "2",
  window: "64",
};

/** `deno task serve` on a free port; resolves with its base URL once it listens. */
async function startServe(allowOrigin: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "serve", "--port", "0", "--allow-origin", allowOrigin],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    banner += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  const base = banner.match(/at (http:\/\/\S+)\/v1/)?.[1];
  if (!base) {
    child.kill("SIGTERM");
    const err = await new Response(child.stderr).text();
    throw new Error(`deno task serve did not start: ${banner}\n${err}`);
  }
  return {
    base,
    async stop() {
      child.kill("SIGTERM");
      const [status] = await Promise.all([child.status, child.stderr.cancel().catch(() => {})]);
      return status;
    },
  };
}

/** Fills the form, writes with `engine`, and returns the story and the chart's losses. */
async function writeStory(
  page: Page,
  problems: PageProblems,
  engine: "page" | "server",
  api?: string,
): Promise<{ text: string; losses: number[]; status: string }> {
  await page.click(`input[name="engine"][value="${engine}"]`);
  const fields = { ...FIELDS, ...(api ? { api } : {}) };
  for (const [id, value] of Object.entries(fields)) {
    await page.$eval(`#${id}`, (el, v) => {
      (el as unknown as { value: string }).value = v as string;
    }, value);
  }
  await page.click("#write");
  await page.waitForFunction(
    `(() => { const s = document.getElementById("status").textContent;
      return s.startsWith("Done") || s.startsWith("Error") || s.startsWith("Stopped"); })()`,
    { timeout: 10 * 60_000, polling: 200 },
  );
  const status = await statusOf(page);
  const state = await page.evaluate(() =>
    (globalThis as unknown as {
      temploraPage: { state(): { text: string; losses: number[] } };
    }).temploraPage.state()
  );
  assert.match(status, /^Done/, `${engine} engine: ${status} (${problems.errors.join("; ")})`);
  return { ...state, status };
}

/** The page's status line. */
function statusOf(page: Page): Promise<string> {
  return page.$eval("#status", (el) => el.textContent ?? "");
}

/** The story so far, as the page keeps it. */
function storyOf(page: Page): Promise<string> {
  return page.evaluate(() =>
    (globalThis as unknown as { temploraPage: { state(): { text: string } } }).temploraPage
      .state().text
  );
}

/** Stop a long run, continue it, and download the text (in the page engine). */
async function stopContinueDownload(page: Page): Promise<void> {
  const set = (id: string, value: string) =>
    page.$eval(
      `#${id}`,
      (el, v) => (el as unknown as { value: string }).value = v as string,
      value,
    );
  await page.click('input[name="engine"][value="page"]');
  await set("tokens", "4000");
  await page.click("#write");
  await page.waitForFunction(`window.temploraPage.state().text.length > 40`, {
    timeout: 5 * 60_000,
    polling: 100,
  });
  await page.click("#stop");
  await page.waitForFunction(
    `document.getElementById("status").textContent.startsWith("Stopped")`,
    { timeout: 60_000, polling: 100 },
  );
  const stopped = await storyOf(page);
  assert.ok(stopped.length > 40 && stopped.length < 4000 * 3, `stopped at ${stopped.length}`);
  await set("tokens", "16");
  await page.click("#continue");
  await page.waitForFunction(
    `document.getElementById("status").textContent.startsWith("Done")`,
    { timeout: 5 * 60_000, polling: 100 },
  );
  const continued = await storyOf(page);
  assert.ok(continued.startsWith(stopped) && continued.length > stopped.length, continued);
  // Download: the link's blob holds the prompt and the story.
  // (Page code as text: this file is type-checked without the DOM's types.)
  const downloaded = await page.evaluate(`(async () => {
    const proto = HTMLAnchorElement.prototype;
    const original = proto.click;
    let href = "";
    let name = "";
    proto.click = function () {
      href = this.href;
      name = this.download;
    };
    try {
      document.getElementById("download").click();
    } finally {
      proto.click = original;
    }
    return { name, text: await (await fetch(href)).text() };
  })()`) as { name: string; text: string };
  assert.equal(downloaded.name, "story.txt");
  assert.equal(downloaded.text, FIELDS.prompt + continued);
  console.log(`  stopped at ${stopped.length} characters, continued to ${continued.length}`);
  await set("tokens", FIELDS.tokens);
  assert.match(await statusOf(page), /^Done/);
}

Deno.test({
  name: "the writing page writes a story in both engines, from deno task serve and a static server",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const built = await buildPage();
    await stopBundler();
    const files = new Map<string, string | Uint8Array>(
      [...built].map(([name, text]) => [`/${name}`, text]),
    );
    const statics = await serveStatic({ mounts: { "/models/": `${REPO}models/` }, files });
    const serve = await startServe(statics.origin);
    const session = await launchChromium();
    const texts: Record<string, string> = {};
    try {
      for (
        const [where, url, api] of [
          ["deno task serve", `${serve.base}/`, undefined],
          ["a static server", `${statics.origin}/`, `${serve.base}/v1`],
        ] as const
      ) {
        await t.step(`page from ${where}`, async () => {
          const { page, problems } = await openPage(session);
          await page.setViewport({ width: 1200, height: 860 });
          await page.goto(url);
          for (const engine of ["page", "server"] as const) {
            const story = await writeStory(page, problems, engine, api);
            console.log(`  ${engine} engine: ${story.status}`);
            console.log(`    ${JSON.stringify(story.text.slice(0, 100))}...`);
            assert.ok(story.text.length > 40, `${engine}: ${JSON.stringify(story.text)}`);
            // 48 tokens in chunks of 16: every chunk trained shows on the chart.
            assert.ok(story.losses.length >= 2, `${engine}: losses ${story.losses}`);
            for (const loss of story.losses) assert.ok(Number.isFinite(loss) && loss > 0);
            texts[`${where}, ${engine} engine`] = story.text;
          }
          if (where === "deno task serve") await stopContinueDownload(page);
          const shot = Deno.env.get("TEMPLORA_SCREENSHOT");
          if (shot && where === "deno task serve") {
            // A longer, sampled story in the page for the picture.
            await page.click('input[name="engine"][value="page"]');
            await page.$eval("#tokens", (el) => (el as unknown as { value: string }).value = "320");
            await page.$eval(
              "#temperature",
              (el) => (el as unknown as { value: string }).value = "0.8",
            );
            await page.$eval("#chunk", (el) => (el as unknown as { value: string }).value = "32");
            await page.$eval("#window", (el) => (el as unknown as { value: string }).value = "128");
            await page.click("#write");
            await page.waitForFunction(
              `document.getElementById("status").textContent.startsWith("Done")`,
              { timeout: 10 * 60_000, polling: 500 },
            );
            await page.screenshot({ path: shot as `${string}.png` });
          }
          assert.deepEqual(problems.errors, [], `the page from ${where} logged errors`);
          await page.close();
        });
      }
    } finally {
      await session.close();
      const status = await serve.stop();
      await statics.close();
      assert.equal(status.code, 0, "deno task serve did not stop cleanly");
    }
    // Greedy: the same story whichever engine wrote it, on whichever WebGPU.
    const [first, ...rest] = Object.values(texts);
    assert.equal(Object.keys(texts).length, 4);
    for (const [name, text] of Object.entries(texts)) assert.equal(text, first, name);
    assert.ok(rest.length === 3);
  },
});
