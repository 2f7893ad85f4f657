import type { Rates } from '../../shared/dashboard/contract.js';
import type { Clock } from './clock.js';

/** Rates are measured over this window (or since the agent started, when that is shorter). */
const WINDOW_MS = 10 * 60_000;
/** Below this much history a rate would be noise: shown as unknown. */
const MIN_SPAN_MS = 30_000;

/** This node's pace from the receipts it earned lately: tokens per second and credit (FLOP) per hour. */
export class RateMeter {
  private readonly started: number;
  private samples: { at: number; tokens: number; flops: number }[] = [];

  constructor(private readonly clock: Clock) {
    this.started = clock.now();
  }

  add(tokens: number, flops: number): void {
    this.samples.push({ at: this.clock.now(), tokens, flops });
  }

  read(): Rates {
    const now = this.clock.now();
    this.samples = this.samples.filter((s) => s.at > now - WINDOW_MS);
    const span = Math.min(WINDOW_MS, now - this.started);
    if (span < MIN_SPAN_MS) return { tokensPerSecond: null, flopsPerHour: null };
    const tokens = this.samples.reduce((sum, s) => sum + s.tokens, 0);
    const flops = this.samples.reduce((sum, s) => sum + s.flops, 0);
    return { tokensPerSecond: (tokens * 1000) / span, flopsPerHour: (flops * 3_600_000) / span };
  }
}
