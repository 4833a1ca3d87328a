/**
 * Headless Chromium for the browser tests, through puppeteer-core and the system's browser
 * (Debian's `chromium`; TEMPLORA_CHROMIUM names another). Nothing is downloaded. WebGPU there
 * runs on SwiftShader (Dawn and Tint over Vulkan on the CPU): `--enable-unsafe-webgpu` is the
 * only flag it needs headless; the rest keep a test browser quiet on a machine without network.
 */
import puppeteer, { type Browser, type ConsoleMessage, type Page } from "puppeteer-core";

/** The browser the tests drive. */
export const CHROMIUM = Deno.env.get("TEMPLORA_CHROMIUM") ?? "/usr/bin/chromium";

/** Flags for a quiet, throwaway headless browser with WebGPU. */
export const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-dev-shm-usage",
];

/** Whether the system browser is there (the browser tests fail, naming it, when it is not). */
export function haveChromium(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** A launched browser and its throwaway profile. */
export interface ChromiumSession {
  browser: Browser;
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/** Launches headless Chromium with a fresh profile. */
export async function launchChromium(): Promise<ChromiumSession> {
  if (!haveChromium()) {
    throw new Error(
      `no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set ` +
        "TEMPLORA_CHROMIUM",
    );
  }
  const profile = await Deno.makeTempDir({ prefix: "templora-chromium-" });
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    userDataDir: profile,
    // Kernel tests and model loads on SwiftShader can take minutes in one evaluate().
    protocolTimeout: 20 * 60_000,
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** Problems a page reported: console errors and uncaught exceptions. */
export interface PageProblems {
  /** Console messages of type "error", and uncaught errors, as text. */
  errors: string[];
}

/** A new page that records console errors and uncaught exceptions (and echoes them when asked). */
export async function openPage(
  session: ChromiumSession,
  echo = false,
): Promise<{ page: Page; problems: PageProblems }> {
  const page = await session.browser.newPage();
  page.setDefaultTimeout(10 * 60_000);
  const problems: PageProblems = { errors: [] };
  page.on("console", (message: ConsoleMessage) => {
    if (message.type() === "error") problems.errors.push(message.text());
    if (echo) console.log(`  [page ${message.type()}] ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) {
      problems.errors.push(`HTTP ${response.status()} for ${response.url()}`);
    }
  });
  page.on("pageerror", (error: unknown) => {
    problems.errors.push(`uncaught: ${error instanceof Error ? error.stack : String(error)}`);
  });
  return { page, problems };
}

/**
 * Waits until the page's title is `title` (pages built for the tests set it when they are ready),
 * failing at once with what the page reported when it reports an error first.
 */
export async function waitForTitle(
  page: Page,
  problems: PageProblems,
  title: string,
  timeoutMs = 120_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (problems.errors.length > 0) {
      throw new Error(`the page reported errors:\n${problems.errors.join("\n")}`);
    }
    if ((await page.title()) === title) return;
    if (Date.now() > until) throw new Error(`the page's title never became "${title}"`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
