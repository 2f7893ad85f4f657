/**
 * Slows the GPU down as it nears the temperature limit: a proportional band below the limit plus a slow,
 * anti-windup integral that removes the steady offset, so the GPU settles just under the limit instead of
 * several degrees below it. The hard stop above limit + margin is the policy's job; this never overshoots
 * far enough to reach it on a well-behaved cooler.
 */
export interface TemperatureControllerOptions {
  /** Width of the slow-down band under the limit, °C: full speed below limit - band. */
  bandC?: number;
  /** Where the integral steers the temperature, °C under the limit. */
  targetBelowC?: number;
  /** Integral gain, duty-cycle fraction per °C·s. */
  integralGain?: number;
}

export class TemperatureController {
  private readonly bandC: number;
  private readonly targetBelowC: number;
  private readonly integralGain: number;
  private integral = 0;
  private lastAt: number | null = null;
  private factorNow = 1;

  constructor(
    private limitC: number,
    options: TemperatureControllerOptions = {},
  ) {
    this.bandC = options.bandC ?? 15;
    this.targetBelowC = options.targetBelowC ?? 1.5;
    this.integralGain = options.integralGain ?? 0.002;
  }

  setLimit(limitC: number): void {
    this.limitC = limitC;
  }

  /** The share of the policy's duty cycle to use (0..1), given a new reading at time `now` (ms). */
  update(tempC: number | null, now: number): number {
    if (tempC === null) return this.factorNow;
    const dt = this.lastAt === null ? 0 : Math.min(5, (now - this.lastAt) / 1000);
    this.lastAt = now;
    const proportional = (this.limitC - tempC) / this.bandC;
    const unclamped = proportional + this.integral;
    // Integrate only while the output is not pinned, or while integrating pulls it back inside (anti-windup).
    const error = this.limitC - this.targetBelowC - tempC;
    const saturatedHigh = unclamped >= 1 && error > 0;
    const saturatedLow = unclamped <= 0 && error < 0;
    if (!saturatedHigh && !saturatedLow) {
      this.integral = Math.max(-1, Math.min(1, this.integral + this.integralGain * error * dt));
    }
    this.factorNow = Math.max(0, Math.min(1, proportional + this.integral));
    return this.factorNow;
  }

  get factor(): number {
    return this.factorNow;
  }

  reset(): void {
    this.integral = 0;
    this.lastAt = null;
    this.factorNow = 1;
  }
}
