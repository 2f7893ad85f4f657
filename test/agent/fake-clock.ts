import type { Clock } from '../../main/agent/clock.js';

/** A clock that moves only when the test says so; sleepers wake as time passes them. */
export class FakeClock implements Clock {
  private sleepers: { until: number; resolve: () => void }[] = [];

  constructor(private t = Date.UTC(2026, 10, 25, 12, 0, 0)) {}

  now(): number {
    return this.t;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.sleepers.push({ until: this.t + ms, resolve }));
  }

  advance(ms: number): void {
    this.t += ms;
    const due = this.sleepers.filter((s) => s.until <= this.t);
    this.sleepers = this.sleepers.filter((s) => s.until > this.t);
    for (const s of due) s.resolve();
  }
}
