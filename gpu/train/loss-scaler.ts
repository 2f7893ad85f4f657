/**
 * Dynamic loss scaling for mixed precision: gradients are computed for `scale * loss`, so the small ones stay
 * above f16's underflow; an overflow (NaN or Inf in a gradient) halves the scale and the step is skipped, and
 * `growthInterval` clean steps in a row double it. Scales are powers of two, so scaling and unscaling are
 * exact in f32: with no overflow the update is the bits of an unscaled run.
 */
export interface LossScaling {
  /** First scale; a power of two (default 2^16). */
  initial?: number;
  /** Clean steps before the scale doubles (default 200). */
  growthInterval?: number;
  /** Below this the overflow is taken as real divergence and rethrown (default 1). */
  min?: number;
  /** Upper bound of the scale (default 2^24). */
  max?: number;
}

/** The default and largest upper bound of the scale. */
export const MAX_LOSS_SCALE = 2 ** 24;

export class LossScaler {
  private current: number;
  private clean = 0;
  private readonly growthInterval: number;
  private readonly min: number;
  private readonly max: number;

  constructor(options: LossScaling = {}) {
    this.current = options.initial ?? 2 ** 16;
    this.growthInterval = options.growthInterval ?? 200;
    this.min = options.min ?? 1;
    this.max = Math.min(options.max ?? MAX_LOSS_SCALE, MAX_LOSS_SCALE);
    for (const [name, v] of [
      ['initial', this.current],
      ['min', this.min],
      ['max', this.max],
    ] as const) {
      if (!(v > 0) || !Number.isFinite(v) || 2 ** Math.round(Math.log2(v)) !== v)
        throw new Error(`lossScaling.${name} must be a positive power of two, got ${v}`);
    }
    if (!Number.isInteger(this.growthInterval) || this.growthInterval < 1)
      throw new Error(`lossScaling.growthInterval must be a positive integer, got ${this.growthInterval}`);
  }

  get scale(): number {
    return this.current;
  }

  /** Records an overflow: halves the scale; false when it is already at its minimum (the caller rethrows). */
  overflow(): boolean {
    this.clean = 0;
    if (this.current <= this.min) return false;
    this.current /= 2;
    return true;
  }

  /** Records a clean step; doubles the scale after `growthInterval` of them in a row. */
  cleanStep(): void {
    if (++this.clean < this.growthInterval) return;
    this.clean = 0;
    this.current = Math.min(this.max, this.current * 2);
  }
}
