/**
 * A small Prometheus registry: counters, gauges read when scraped, and histograms, rendered in
 * the text exposition format (version 0.0.4) that `GET /metrics` serves.
 */

/** Label names and values of one series. */
export type Labels = Record<string, string>;

interface Metric {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  lines(): string[];
}

function labelText(labels: Labels, extra: Labels = {}): string {
  const all = { ...labels, ...extra };
  const keys = Object.keys(all);
  if (!keys.length) return "";
  const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
  return `{${keys.map((k) => `${k}="${escape(all[k])}"`).join(",")}}`;
}

function numberText(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "+Inf";
  if (x === -Infinity) return "-Inf";
  return String(x);
}

/** A value that only goes up, per label set. */
export class Counter implements Metric {
  readonly type = "counter";
  #values = new Map<string, { labels: Labels; value: number }>();

  constructor(readonly name: string, readonly help: string) {}

  /** Adds `by` (default 1) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const entry = this.#values.get(key);
    if (entry) entry.value += by;
    else this.#values.set(key, { labels, value: by });
  }

  /** The series' value (0 when never incremented). */
  value(labels: Labels = {}): number {
    return this.#values.get(labelText(labels))?.value ?? 0;
  }

  lines(): string[] {
    if (!this.#values.size) return [`${this.name} 0`];
    return [...this.#values.values()].map(({ labels, value }) =>
      `${this.name}${labelText(labels)} ${numberText(value)}`
    );
  }
}

/** A value read when the metrics are scraped (a counter kept elsewhere, with `type` "counter"). */
export class Gauge implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly read: () => number,
    readonly type: "gauge" | "counter" = "gauge",
  ) {}

  lines(): string[] {
    return [`${this.name} ${numberText(this.read())}`];
  }
}

/** Observations counted into cumulative buckets, with their sum and count, per label set. */
export class Histogram implements Metric {
  readonly type = "histogram";
  #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {}

  /** Counts one observation. */
  observe(value: number, labels: Labels = {}): void {
    const key = labelText(labels);
    let s = this.#series.get(key);
    if (!s) {
      this.#series.set(
        key,
        s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 },
      );
    }
    this.buckets.forEach((le, i) => {
      if (value <= le) s!.counts[i]++;
    });
    s.sum += value;
    s.count++;
  }

  lines(): string[] {
    const out: string[] = [];
    for (const { labels, counts, sum, count } of this.#series.values()) {
      this.buckets.forEach((le, i) => {
        out.push(`${this.name}_bucket${labelText(labels, { le: numberText(le) })} ${counts[i]}`);
      });
      out.push(`${this.name}_bucket${labelText(labels, { le: "+Inf" })} ${count}`);
      out.push(`${this.name}_sum${labelText(labels)} ${numberText(sum)}`);
      out.push(`${this.name}_count${labelText(labels)} ${count}`);
    }
    return out;
  }
}

/** A set of metrics rendered together. */
export class MetricsRegistry {
  #metrics: Metric[] = [];

  /** Registers and returns `metric`. */
  add<M extends Metric>(metric: M): M {
    this.#metrics.push(metric);
    return metric;
  }

  /** Every metric in the Prometheus text format. */
  render(): string {
    const out: string[] = [];
    for (const m of this.#metrics) {
      out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`, ...m.lines());
    }
    return out.join("\n") + "\n";
  }
}

/** The content type of the text format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** What the server's gauges read when scraped. */
export interface MetricSources {
  /** Sessions writing now, and requests waiting for one. */
  sessions(): { active: number; queued: number };
  /** GPU bytes held by the running sessions together. */
  sessionGpuBytes(): number;
  /** The device's bytes in use and the most it has held. */
  gpu(): { bytesInUse: number; peakBytes: number; available: boolean };
  /** Device losses seen, and models loaded again after one. */
  recoveries(): { losses: number; recoveries: number };
}

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** The server's metrics: what `GET /metrics` serves, and the counters the routes update. */
export class ServerMetrics {
  /** Every metric, in the order they are rendered. */
  readonly registry: MetricsRegistry = new MetricsRegistry();
  /** Requests answered, by route and status. */
  readonly requests: Counter;
  /** Seconds from a request's arrival to its response's head (a stream's first byte). */
  readonly requestSeconds: Histogram;
  /** Seconds a session wrote (from admission to its last token), by route. */
  readonly sessionSeconds: Histogram;
  /** Sessions ended, by outcome. */
  readonly sessionsEnded: Counter;
  /** Tokens written. */
  readonly tokens: Counter;
  /** Prompt tokens read. */
  readonly promptTokens: Counter;
  /** Adapter training steps taken. */
  readonly trainingSteps: Counter;
  /** Steps skipped for non-finite values. */
  readonly skippedSteps: Counter;

  constructor(sources: MetricSources) {
    const r = this.registry;
    const gauge = (name: string, help: string, read: () => number, type?: "counter") =>
      r.add(new Gauge(name, help, read, type));
    gauge(
      "templora_sessions_active",
      "Writing sessions running now.",
      () => sources.sessions().active,
    );
    gauge(
      "templora_sessions_queued",
      "Requests waiting for a session.",
      () => sources.sessions().queued,
    );
    gauge(
      "templora_gpu_bytes_in_use",
      "GPU memory held by the process (weights, sessions, pooled buffers), in bytes.",
      () => sources.gpu().bytesInUse,
    );
    gauge(
      "templora_gpu_peak_bytes",
      "Most GPU memory the device has held at once, in bytes.",
      () => sources.gpu().peakBytes,
    );
    gauge(
      "templora_sessions_gpu_bytes",
      "GPU memory held by the running sessions (KV caches, adapters, optimizer state), in bytes.",
      () => sources.sessionGpuBytes(),
    );
    gauge(
      "templora_gpu_available",
      "1 while the GPU serves requests, 0 while a lost device is being acquired again.",
      () => sources.gpu().available ? 1 : 0,
    );
    gauge(
      "templora_gpu_device_losses_total",
      "GPU device losses seen.",
      () => sources.recoveries().losses,
      "counter",
    );
    gauge(
      "templora_gpu_recoveries_total",
      "Models loaded on a new device after a loss.",
      () => sources.recoveries().recoveries,
      "counter",
    );
    this.tokens = r.add(new Counter("templora_tokens_generated_total", "Tokens written."));
    this.promptTokens = r.add(new Counter("templora_prompt_tokens_total", "Prompt tokens read."));
    this.trainingSteps = r.add(
      new Counter("templora_training_steps_total", "Adapter training steps taken."),
    );
    this.skippedSteps = r.add(
      new Counter(
        "templora_training_steps_skipped_total",
        "Training steps skipped for a non-finite loss or gradient.",
      ),
    );
    this.sessionsEnded = r.add(
      new Counter(
        "templora_sessions_total",
        "Sessions ended, by outcome (completed, disconnected, failed, shutdown).",
      ),
    );
    this.requests = r.add(
      new Counter("templora_requests_total", "HTTP requests answered, by route and status."),
    );
    this.requestSeconds = r.add(
      new Histogram(
        "templora_request_duration_seconds",
        "Seconds from a request's arrival to its response head, by route.",
        SECONDS,
      ),
    );
    this.sessionSeconds = r.add(
      new Histogram(
        "templora_session_duration_seconds",
        "Seconds a session wrote, from admission to its end (streams included), by route.",
        SECONDS,
      ),
    );
  }
}
