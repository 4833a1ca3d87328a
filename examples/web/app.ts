/// <reference lib="dom" />
/**
 * The writing page: choose an engine (templora in the page, or a server's API), a model, a
 * prompt and the Temp-Lora settings; the story streams in, the chart follows each chunk's
 * training loss and the speed; stop, continue (a new run whose prompt is the text so far) and
 * download the text. `deno task build:web` bundles it into dist/web/; `deno task serve` serves
 * it at `/`.
 */
import {
  type Engine,
  type EngineEvent,
  PageEngine,
  ServerEngine,
  type WriteRequest,
} from "./engines.ts";
import { LiveChart } from "./chart.ts";
import type { NamedBlob } from "../../mod.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const form = $<HTMLFormElement>("settings");
const story = $<HTMLElement>("story");
const statusLine = $<HTMLElement>("status");
const buttons = {
  write: $<HTMLButtonElement>("write"),
  stop: $<HTMLButtonElement>("stop"),
  continue: $<HTMLButtonElement>("continue"),
  download: $<HTMLButtonElement>("download"),
};
const chart = new LiveChart($<HTMLCanvasElement>("chart"));
const apiInput = $<HTMLInputElement>("api");
apiInput.value = new URL("v1", location.href).href;

/** Milliseconds between two speed samples on the chart (tokens arrive in batches). */
const SPEED_EVERY_MS = 500;

let engine: Engine | undefined;
/** What the loaded page engine was loaded from, so a new run reuses it. */
let engineKey = "";
let running: AbortController | undefined;
let promptText = "";
let storyText = "";
/** Tokens written since the last Write (Continue adds to them). */
let tokensWritten = 0;

function engineKind(): "page" | "server" {
  return (form.elements.namedItem("engine") as RadioNodeList).value === "server"
    ? "server"
    : "page";
}

function showEngineFields(): void {
  form.classList.toggle("server", engineKind() === "server");
  form.classList.toggle("page", engineKind() === "page");
}
form.addEventListener("change", showEngineFields);
showEngineFields();

function status(text: string, error = false): void {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", error);
}

function numberField(id: string): number | undefined {
  const v = $<HTMLInputElement>(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function request(prompt: string): WriteRequest {
  return {
    prompt,
    maxTokens: numberField("tokens") ?? 512,
    temperature: numberField("temperature") ?? 0.8,
    topP: numberField("top-p") ?? 1,
    seed: numberField("seed"),
    templora: {
      enabled: $<HTMLInputElement>("templora").checked,
      chunk: numberField("chunk"),
      epochs: numberField("epochs"),
      lr: numberField("lr"),
      rank: numberField("rank"),
      window: numberField("window"),
    },
  };
}

/** The engine the form asks for, loading a model in the page when it changed. */
async function currentEngine(): Promise<Engine> {
  if (engineKind() === "server") {
    const key = `server:${apiInput.value}`;
    if (engine && engineKey === key) return engine;
    engine?.dispose();
    engine = new ServerEngine(apiInput.value);
    engineKey = key;
    return engine;
  }
  const files = [...($<HTMLInputElement>("model-files").files ?? [])] as NamedBlob[];
  const url = $<HTMLInputElement>("model-url").value.trim();
  const key = files.length > 0
    ? `files:${files.map((f) => `${f.name}:${f.size}`).join(",")}`
    : `url:${new URL(url, location.href).href}`;
  if (engine && engineKey === key) return engine;
  engine?.dispose();
  engine = undefined;
  status(files.length > 0 ? "Loading the chosen files..." : `Loading ${url}...`);
  engine = await PageEngine.load(files.length > 0 ? files : new URL(url, location.href).href);
  engineKey = key;
  return engine;
}

function setRunning(on: boolean): void {
  buttons.write.disabled = on;
  buttons.stop.disabled = !on;
  buttons.continue.disabled = on || storyText === "";
  buttons.download.disabled = on || storyText === "";
}

/** Writes with `prompt`; `fresh` clears the page first (Write), else the text goes on (Continue). */
async function run(prompt: string, fresh: boolean): Promise<void> {
  const controller = running = new AbortController();
  setRunning(true);
  if (fresh) {
    promptText = prompt;
    storyText = "";
    story.replaceChildren(Object.assign(document.createElement("span"), {
      className: "prompt",
      textContent: prompt,
    }));
    chart.clear();
    tokensWritten = 0;
  }
  const body = document.createTextNode("");
  story.append(body);
  const base = storyText.length;
  const before = tokensWritten;
  let written = before;
  let lastTokens = 0;
  const started = performance.now();
  try {
    const e = await currentEngine();
    status(`Writing with ${e.description}...`);
    let lastSample = performance.now();
    for await (
      const event of e.write(request(prompt), controller.signal) as AsyncGenerator<EngineEvent>
    ) {
      if (event.type === "text") {
        storyText += event.text;
        body.data = storyText.slice(base);
        written = before + event.tokens;
        const now = performance.now();
        if (now - lastSample >= SPEED_EVERY_MS) {
          chart.addSpeed(written, ((event.tokens - lastTokens) * 1000) / (now - lastSample));
          lastSample = now;
          lastTokens = event.tokens;
        }
      } else if (event.type === "train") {
        chart.addLoss(written, event.chunk, event.loss);
        status(
          `Writing with ${e.description}: chunk ${event.chunk + 1} trained, loss ${
            event.loss.toFixed(3)
          }`,
        );
      } else {
        const now = performance.now();
        if (written - before > lastTokens && now - lastSample >= SPEED_EVERY_MS / 2) {
          chart.addSpeed(written, ((written - before - lastTokens) * 1000) / (now - lastSample));
        }
        const seconds = (now - started) / 1000;
        status(`Done: ${written - before} tokens in ${seconds.toFixed(1)} s (${event.reason}).`);
      }
    }
    if (controller.signal.aborted) status(`Stopped after ${written} tokens.`);
  } catch (error) {
    if (controller.signal.aborted) {
      status(`Stopped after ${written} tokens.`);
    } else {
      const message = error instanceof Error ? error.message : String(error);
      status(`Error: ${message}`, true);
      console.error(error);
    }
  } finally {
    running = undefined;
    tokensWritten = written;
    setRunning(false);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!running) run($<HTMLTextAreaElement>("prompt").value, true);
});
buttons.stop.addEventListener("click", () => running?.abort());
buttons.continue.addEventListener("click", () => {
  if (!running) run(promptText + storyText, false);
});
buttons.download.addEventListener("click", () => {
  const blob = new Blob([promptText + storyText], { type: "text/plain;charset=utf-8" });
  const a = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob),
    download: "story.txt",
  });
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
});

document.title = "templora — writing with Temp-Lora";
(globalThis as { temploraPage?: unknown }).temploraPage = {
  /** For tests: the story's text so far (prompt excluded) and the chart's losses. */
  state: () => ({ text: storyText, losses: chart.losses, running: running !== undefined }),
};
