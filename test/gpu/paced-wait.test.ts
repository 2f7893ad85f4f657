import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PacedWait } from '../../gpu/engine/paced-wait.js';

/** A GPU wait that settles `ms` after submission; the wait is only asked for once `wait` runs. */
function work(ms: number, submitted: number, asks: number[]): () => Promise<void> {
  return () => {
    asks.push(performance.now() - submitted);
    return new Promise((resolve) => setTimeout(resolve, Math.max(0, submitted + ms - performance.now())));
  };
}

describe('PacedWait', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'performance'] }));
  afterEach(() => vi.useRealTimers());

  async function run(pace: PacedWait, ms: number, asks: number[]): Promise<void> {
    const submitted = performance.now();
    const done = pace.wait('site', submitted, work(ms, submitted, asks));
    await vi.runAllTimersAsync();
    await done;
  }

  it('asks at once for the first two waits of a site, then sleeps 90% of the shorter of the last two', async () => {
    const pace = new PacedWait();
    const asks: number[] = [];
    await run(pace, 500, asks);
    await run(pace, 100, asks);
    await run(pace, 100, asks);
    expect(asks.slice(0, 2)).toEqual([0, 0]);
    expect(asks[2]).toBeCloseTo(90, 0);
  });

  it('halves its estimate when it finds the work already done', async () => {
    const pace = new PacedWait();
    const asks: number[] = [];
    await run(pace, 100, asks);
    await run(pace, 100, asks);
    await run(pace, 10, asks); // slept 90 ms for 10 ms of work: recorded as 45
    await run(pace, 10, asks);
    expect(asks[2]).toBeCloseTo(90, 0);
    expect(Math.abs(asks[3]! - 40.5)).toBeLessThanOrEqual(1);
  });
});
