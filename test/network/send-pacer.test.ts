import { describe, expect, it } from 'vitest';
import { SendPacer } from '../../coordinator/send-pacer.js';

/** Holds the event loop like a socket write of a large frame does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('SendPacer', () => {
  it('sends a burst in order, in slices, and lets the event loop run between them', async () => {
    const pacer = new SendPacer(5);
    const events: string[] = [];
    for (let i = 0; i < 40; i++)
      pacer.send(() => {
        busy(1);
        events.push(`send ${i}`);
      });
    const sentAtOnce = events.length;
    // A heartbeat arriving during the burst: its handler runs on the next turn of the loop.
    setTimeout(() => events.push('timer'), 0);
    await new Promise((r) => setTimeout(r, 200));

    expect(sentAtOnce).toBeGreaterThanOrEqual(1);
    expect(sentAtOnce).toBeLessThan(10);
    const sends = events.filter((e) => e !== 'timer');
    expect(sends).toEqual(Array.from({ length: 40 }, (_, i) => `send ${i}`));
    const timer = events.indexOf('timer');
    expect(timer).toBeGreaterThan(sentAtOnce - 1);
    expect(timer).toBeLessThan(events.length - 1);
  });

  it('sends at once while the slice has time left', () => {
    const pacer = new SendPacer(50);
    const sent: number[] = [];
    for (let i = 0; i < 5; i++) pacer.send(() => sent.push(i));
    expect(sent).toEqual([0, 1, 2, 3, 4]);
  });

  it('opens a new slice on a later turn of the event loop', async () => {
    const pacer = new SendPacer(5);
    let sent = 0;
    pacer.send(() => busy(10));
    await new Promise((r) => setTimeout(r, 20));
    pacer.send(() => sent++);
    expect(sent).toBe(1);
  });
});
