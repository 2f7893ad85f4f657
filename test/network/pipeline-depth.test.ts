import { describe, expect, test } from 'vitest';
import { inFlightLimit, outstandingLimit } from '../../coordinator/step-attempt.js';

describe('how much work the coordinator keeps out to hide the link', () => {
  test('tasks out at a peer: two until measured, more as the link grows against the compute, at most 8', () => {
    expect(outstandingLimit({ linkMs: null, computeMs: null })).toBe(2);
    // A LAN: the next task arrives while the current one runs.
    expect(outstandingLimit({ linkMs: 3, computeMs: 30 })).toBe(2);
    // A home link (40 ms each way and the tensors' transfer) against 30 ms tasks.
    expect(outstandingLimit({ linkMs: 130, computeMs: 30 })).toBe(6);
    expect(outstandingLimit({ linkMs: 10_000, computeMs: 1 })).toBe(8);
  });

  test("micro-batches held: 1F1B's S - stage and a spare below the last stage, two on a LAN", () => {
    const stages = 4;
    const lan = { computeMs: 30, stashes: 64 };
    expect([0, 1, 2, 3].map((s) => inFlightLimit(lan, s, stages, 0))).toEqual([5, 4, 3, 1]);
    expect([0, 1, 2, 3].map((s) => inFlightLimit(lan, s, stages, 3))).toEqual([6, 5, 4, 1]);
  });

  test('a long link needs more in flight, the nearer the first stage the more; never past the stash', () => {
    const home = { computeMs: 30, stashes: 64 };
    // Stage 0 waits out 6 crossings of 130 ms for each micro-batch's gradient: 780 ms over 60 ms units.
    expect([0, 1, 2, 3].map((s) => inFlightLimit(home, s, 4, 130))).toEqual([18, 13, 8, 1]);
    expect(inFlightLimit({ computeMs: 30, stashes: 3 }, 0, 4, 130)).toBe(3);
    // Not yet measured: 1F1B's depth and the one spare.
    expect(inFlightLimit({ computeMs: null, stashes: 64 }, 0, 4, 130)).toBe(5);
  });
});
