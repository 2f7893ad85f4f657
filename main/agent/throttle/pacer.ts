import type { WorkGate } from '../../node/hooks.js';
import type { Clock } from '../clock.js';

/**
 * Keeps the GPU busy no more than `dutyCycle` of the time by resting between units of work, and holds work
 * back entirely while the agent is not running. It only ever delays the next unit: whatever the runtime has
 * accepted finishes first, so pausing never loses work.
 */
export class DutyCyclePacer implements WorkGate {
  private dutyCycle = 1;
  private waiters = new Set<() => void>();
  /** When the gate last let a unit start (after its rest), to count overhead outside the GPU as rest. */
  private lastRelease: number | null = null;
  /**
   * Rest taken beyond what was owed (timers oversleep, overhead outside the GPU), carried to the next units
   * so the cap holds over a window rather than per unit. Bounded, so a long gap never buys a long burst.
   */
  private restBalanceMs = 0;

  constructor(
    private readonly clock: Clock,
    private readonly maxCarryMs = 250,
  ) {}

  /** 0 closes the gate; anything in (0, 1] opens it at that duty cycle. */
  setDutyCycle(dutyCycle: number): void {
    this.dutyCycle = Math.min(1, Math.max(0, dutyCycle));
    if (this.dutyCycle > 0) {
      for (const wake of this.waiters) wake();
      this.waiters.clear();
    }
  }

  get current(): number {
    return this.dutyCycle;
  }

  async waitUntilAllowed(signal?: AbortSignal): Promise<void> {
    while (this.dutyCycle <= 0) {
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          this.waiters.delete(wake);
          reject(signal?.reason);
        };
        this.waiters.add(wake);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      // A pause resets pacing: the GPU rested throughout it.
      this.lastRelease = null;
      this.restBalanceMs = 0;
    }
    this.lastRelease ??= this.clock.now();
  }

  async afterWork(busyMs: number): Promise<void> {
    const now = this.clock.now();
    const d = this.dutyCycle;
    // Time spent outside the GPU since the unit started (feeding, encoding, the network) already counts as rest.
    const sinceRelease = this.lastRelease === null ? busyMs : now - this.lastRelease;
    const restedMs = Math.max(0, sinceRelease - busyMs);
    if (d <= 0 || d >= 1) {
      this.restBalanceMs = 0;
      this.lastRelease = now;
      return;
    }
    const owedMs = (busyMs * (1 - d)) / d;
    const restMs = owedMs - restedMs - this.restBalanceMs;
    if (restMs > 0) await this.clock.sleep(restMs);
    const released = this.clock.now();
    const balance = this.restBalanceMs + restedMs + (released - now) - owedMs;
    this.restBalanceMs = Math.max(-this.maxCarryMs, Math.min(this.maxCarryMs, balance));
    this.lastRelease = released;
  }
}
