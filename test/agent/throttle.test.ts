import { describe, expect, it } from 'vitest';
import { DutyCyclePacer } from '../../main/agent/throttle/pacer.js';
import { checkVram, stageMemoryBytes } from '../../main/agent/throttle/vram.js';
import { FakeClock } from './fake-clock.js';

/** Lets pending sleeps register before the clock moves. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('duty-cycle pacer (fake clock)', () => {
  it('rests busy x (1 - d) / d after each unit, counting time outside the GPU as rest', async () => {
    const clock = new FakeClock();
    const pacer = new DutyCyclePacer(clock);
    pacer.setDutyCycle(0.25);
    await pacer.waitUntilAllowed();
    clock.advance(10); // 10 ms of GPU work
    let done = false;
    const rest = pacer.afterWork(10).then(() => (done = true));
    await settle();
    clock.advance(29);
    await settle();
    expect(done).toBe(false);
    clock.advance(1);
    await rest;
    // Next unit: 10 ms busy after 12 ms spent feeding it, so only 18 ms more rest is owed.
    clock.advance(12 + 10);
    done = false;
    const rest2 = pacer.afterWork(10).then(() => (done = true));
    await settle();
    clock.advance(17);
    await settle();
    expect(done).toBe(false);
    clock.advance(1);
    await rest2;
  });

  it('does not rest at 100% and holds work while closed', async () => {
    const clock = new FakeClock();
    const pacer = new DutyCyclePacer(clock);
    await pacer.afterWork(1000);
    pacer.setDutyCycle(0);
    let open = false;
    const waiting = pacer.waitUntilAllowed().then(() => (open = true));
    await settle();
    expect(open).toBe(false);
    pacer.setDutyCycle(0.5);
    await waiting;
    expect(open).toBe(true);
  });

  it('a long gap buys at most a bounded burst', async () => {
    const clock = new FakeClock();
    const pacer = new DutyCyclePacer(clock, 250);
    pacer.setDutyCycle(0.5);
    await pacer.waitUntilAllowed();
    clock.advance(60_000); // a minute waiting for the network
    let unrested = 0;
    for (;;) {
      clock.advance(100); // 100 ms of GPU work; 100 ms of rest owed at 50%
      let done = false;
      const rest = pacer.afterWork(100).then(() => (done = true));
      await settle();
      if (!done) {
        clock.advance(50);
        await rest;
        break;
      }
      unrested++;
    }
    // The gap itself covers the first unit; the 250 ms carry covers two more and half of the fourth.
    expect(unrested).toBe(3);
  });
});

describe('VRAM cap', () => {
  it('uses the engine estimate when given one, else the number', () => {
    const estimate = (_c: unknown, range: { endBlock: number; firstBlock: number }): number =>
      (range.endBlock - range.firstBlock) * 1e9;
    const config = { vocabSize: 256, contextLength: 64, width: 64, heads: 4, layers: 4, mlpRatio: 4 };
    expect(
      stageMemoryBytes({
        estimate,
        config,
        range: { index: 0, count: 2, firstBlock: 0, endBlock: 2 },
        shape: { batch: 1, seq: 64 },
      }),
    ).toBe(2e9);
    expect(stageMemoryBytes(5e8)).toBe(5e8);
    expect(() => stageMemoryBytes(Number.NaN)).toThrow(/invalid stage memory estimate/);
  });

  it('refuses a stage above the cap or the device, with a reason', () => {
    expect(checkVram(1.5e9, 2000)).toEqual({ ok: true });
    expect(checkVram(2.5e9, 2000)).toEqual({
      ok: false,
      reason: 'this stage needs 2.5 GB of GPU memory, above your 2.0 GB limit',
    });
    expect(checkVram(9e9, null, 8192)).toEqual({
      ok: false,
      reason: 'this stage needs 9.0 GB of GPU memory; the GPU has 8.2 GB',
    });
  });
});
