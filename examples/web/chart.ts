/// <reference lib="dom" />
/**
 * The page's live chart, on a canvas: each chunk's training loss (the last step of the chunk,
 * dots; left axis) and the writing speed in tokens per second (line; right axis), against the
 * tokens written.
 */

/** One training step as the chart keeps it. */
interface LossPoint {
  tokens: number;
  chunk: number;
  loss: number;
}

/** One speed sample. */
interface SpeedPoint {
  tokens: number;
  perSecond: number;
}

const LOSS_COLOUR = "#c2410c";
const SPEED_COLOUR = "#0b6bcb";
const GRID = "#d1d9e0";
const TEXT = "#59636e";

/** A chart that redraws itself (at most once a frame) as points arrive. */
export class LiveChart {
  #losses: LossPoint[] = [];
  #speeds: SpeedPoint[] = [];
  #pending = false;

  constructor(readonly canvas: HTMLCanvasElement) {
    this.draw();
  }

  /** Forgets every point. */
  clear(): void {
    this.#losses = [];
    this.#speeds = [];
    this.#schedule();
  }

  /** A training step of `chunk` finished with `loss`, after `tokens` tokens (a later step of the same chunk replaces it). */
  addLoss(tokens: number, chunk: number, loss: number): void {
    const last = this.#losses[this.#losses.length - 1];
    if (last && last.chunk === chunk) Object.assign(last, { tokens, loss });
    else this.#losses.push({ tokens, chunk, loss });
    this.#schedule();
  }

  /** The speed measured up to `tokens` tokens. */
  addSpeed(tokens: number, perSecond: number): void {
    this.#speeds.push({ tokens, perSecond });
    this.#schedule();
  }

  /** The chunks' losses so far, in order (what the chart shows). */
  get losses(): readonly number[] {
    return this.#losses.map((p) => p.loss);
  }

  #schedule(): void {
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      this.draw();
    });
  }

  /** Draws every point now. */
  draw(): void {
    const canvas = this.canvas;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    if (!g) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "12px system-ui, sans-serif";
    const pad = { left: 48, right: 56, top: 24, bottom: 26 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    const maxTokens = Math.max(
      16,
      ...this.#losses.map((p) => p.tokens),
      ...this.#speeds.map((p) => p.tokens),
    );
    const maxLoss = niceCeiling(Math.max(0.5, ...this.#losses.map((p) => p.loss)));
    const maxSpeed = niceCeiling(Math.max(1, ...this.#speeds.map((p) => p.perSecond)));
    const x = (tokens: number) => pad.left + (tokens / maxTokens) * w;
    const yLoss = (loss: number) => pad.top + h - (loss / maxLoss) * h;
    const ySpeed = (speed: number) => pad.top + h - (speed / maxSpeed) * h;

    g.strokeStyle = GRID;
    g.fillStyle = TEXT;
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.top + (h * i) / 4;
      g.beginPath();
      g.moveTo(pad.left, y);
      g.lineTo(pad.left + w, y);
      g.stroke();
      g.textAlign = "right";
      g.fillText(format(maxLoss * (1 - i / 4)), pad.left - 6, y + 4);
      g.textAlign = "left";
      g.fillText(format(maxSpeed * (1 - i / 4)), pad.left + w + 6, y + 4);
    }
    g.textAlign = "center";
    g.fillText(`tokens written (${maxTokens})`, pad.left + w / 2, height - 6);
    g.textAlign = "left";
    g.fillStyle = LOSS_COLOUR;
    g.fillText("training loss per chunk (nats/token)", pad.left, 14);
    g.fillStyle = SPEED_COLOUR;
    g.textAlign = "right";
    g.fillText("tokens/s", pad.left + w + pad.right - 4, 14);

    if (this.#speeds.length > 0) {
      g.strokeStyle = SPEED_COLOUR;
      g.lineWidth = 1.5;
      g.beginPath();
      this.#speeds.forEach((p, i) => {
        if (i === 0) g.moveTo(x(p.tokens), ySpeed(p.perSecond));
        else g.lineTo(x(p.tokens), ySpeed(p.perSecond));
      });
      g.stroke();
    }
    g.fillStyle = LOSS_COLOUR;
    g.strokeStyle = LOSS_COLOUR;
    g.lineWidth = 1;
    g.beginPath();
    this.#losses.forEach((p, i) => {
      if (i === 0) g.moveTo(x(p.tokens), yLoss(p.loss));
      else g.lineTo(x(p.tokens), yLoss(p.loss));
    });
    g.stroke();
    for (const p of this.#losses) {
      g.beginPath();
      g.arc(x(p.tokens), yLoss(p.loss), 3.5, 0, 2 * Math.PI);
      g.fill();
    }
  }
}

/** 1, 2 or 5 times a power of ten, at least `v`. */
function niceCeiling(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function format(v: number): string {
  if (v === 0) return "0";
  return v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2);
}
