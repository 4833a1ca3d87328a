/**
 * The in-page half of the browser test runs: what Deno.test and the few other Deno calls of the
 * kernel tests do, for a page. Test files are bundled unchanged (tools/web_build.ts replaces
 * `Deno.test`, `Deno.env`, `Deno.statSync` and `Deno.errors` by this object's members); the
 * driver (browser/driver.ts) lists the registered tests and runs them one at a time, each
 * reporting pass or fail, its error and what it printed.
 */

/** The test context handed to a test function (what the kernel tests use of Deno.TestContext). */
export interface PageTestContext {
  name: string;
  step(name: string, fn: (t: PageTestContext) => unknown): Promise<boolean>;
}

/** A test definition as Deno.test takes it. */
interface Definition {
  name: string;
  fn: (t: PageTestContext) => unknown;
  ignore?: boolean;
  only?: boolean;
}

/** What running one test reports to the driver. */
export interface PageTestResult {
  name: string;
  ok: boolean;
  ignored: boolean;
  error?: string;
  logs: string[];
  /** Seconds the test waited on pipeline compiles and on GPU work. */
  compileSeconds: number;
  gpuSeconds: number;
}

/** Deno.errors.NotFound's stand-in (thrown by statSync). */
class NotFound extends Error {
  override name = "NotFound";
}

const registered: Definition[] = [];
const params = new URLSearchParams(globalThis.location?.search ?? "");
const env = new Map<string, string>(Object.entries(JSON.parse(params.get("env") ?? "{}")));

/** Files the static server holds (absolute URLs), for statSync. */
const served = new Set<string>(
  await fetch(new URL("/__manifest.json", globalThis.location?.href)).then((r) => r.json()),
);

function register(a: string | Definition | Definition["fn"], b?: unknown, c?: unknown): void {
  if (typeof a === "string") {
    const fn = (typeof b === "function" ? b : c) as Definition["fn"];
    const options = typeof b === "object" && b !== null ? b as Partial<Definition> : {};
    registered.push({ ...options, name: a, fn });
  } else if (typeof a === "function") {
    registered.push({ name: a.name, fn: a });
  } else {
    registered.push(a);
  }
}

function context(name: string, logs: string[]): PageTestContext {
  return {
    name,
    async step(stepName, fn) {
      await fn(context(`${name} > ${stepName}`, logs));
      return true;
    },
  };
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const stack = error.stack ?? "";
    const head = `${error.name}: ${error.message}`;
    return stack.includes(error.message) ? stack : `${head}\n${stack}`;
  }
  return String(error);
}

/**
 * Wall-clock seconds during which at least one pipeline compile, or at least one wait on GPU work
 * (a map, a queue wait), was in flight: where a slow test's time went. Not a pass/fail criterion.
 */
const waited = { compile: 0, gpu: 0 };
const inFlight = { compile: 0, gpu: 0 };
const since = { compile: 0, gpu: 0 };

/** Pipeline compiles of the running test that took over a second: "label: seconds". */
const slowCompiles: string[] = [];

function timed(proto: object, method: string, bucket: keyof typeof waited): void {
  const target = proto as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = target[method];
  if (!original) return;
  target[method] = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const start = performance.now();
    if (inFlight[bucket]++ === 0) since[bucket] = start;
    try {
      return await original.apply(this, args);
    } finally {
      if (--inFlight[bucket] === 0) waited[bucket] += (performance.now() - since[bucket]) / 1000;
      const seconds = (performance.now() - start) / 1000;
      if (bucket === "compile" && seconds > 1) {
        const descriptor = args[0] as { label?: string; compute?: { entryPoint?: string } };
        const name = descriptor?.label || descriptor?.compute?.entryPoint || "?";
        slowCompiles.push(`${name}: ${seconds.toFixed(1)} s`);
      }
    }
  };
}

if (typeof GPUDevice !== "undefined") {
  timed(GPUDevice.prototype, "createComputePipelineAsync", "compile");
  timed(GPUBuffer.prototype, "mapAsync", "gpu");
  timed(GPUQueue.prototype, "onSubmittedWorkDone", "gpu");
}

/** Runs one registered test, capturing console output. */
async function run(name: string): Promise<PageTestResult> {
  const test = registered.find((t) => t.name === name);
  const none = { logs: [], compileSeconds: 0, gpuSeconds: 0 };
  if (!test) return { name, ok: false, ignored: false, error: "no such test", ...none };
  if (test.ignore) return { name, ok: true, ignored: true, ...none };
  const logs: string[] = [];
  waited.compile = waited.gpu = 0;
  slowCompiles.length = 0;
  const spent = () => ({ compileSeconds: waited.compile, gpuSeconds: waited.gpu });
  const original = { log: console.log, error: console.error, warn: console.warn };
  const capture = (...args: unknown[]) => logs.push(args.map(String).join(" "));
  console.log = console.warn = capture;
  console.error = capture;
  try {
    await test.fn(context(name, logs));
    return { name, ok: true, ignored: false, logs, ...spent() };
  } catch (error) {
    return { name, ok: false, ignored: false, error: describe(error), logs, ...spent() };
  } finally {
    Object.assign(console, original);
    if (slowCompiles.length) logs.push(`  slow pipeline compiles: ${slowCompiles.join(", ")}`);
  }
}

/** The object bundled test files reach through `Deno.*`. */
export const harness = {
  test: register,
  env: {
    get: (key: string) => env.get(key),
    set: (key: string, value: string) => void env.set(key, value),
    delete: (key: string) => void env.delete(key),
    toObject: () => Object.fromEntries(env),
  },
  errors: { NotFound },
  statSync(path: string | URL): { isFile: boolean; isDirectory: boolean; size: number } {
    const url = new URL(String(path), globalThis.location?.href).href;
    if (served.has(url)) return { isFile: true, isDirectory: false, size: 0 };
    if ([...served].some((f) => f.startsWith(url.endsWith("/") ? url : `${url}/`))) {
      return { isFile: false, isDirectory: true, size: 0 };
    }
    throw new NotFound(`${url}: not served`);
  },
  /** Every registered test, in registration order. */
  list: (): { name: string; ignore: boolean }[] =>
    registered.map((t) => ({ name: t.name, ignore: Boolean(t.ignore) })),
  run,
};

(globalThis as { __temploraHarness?: typeof harness }).__temploraHarness = harness;
