import { expect, test } from 'vitest';
import { rebalanceMove, stageForJoiner, stageRates, type PlacedPeer } from '../../coordinator/placement.js';

const peer = (id: string, stage: number, flopsPerSecond: number | null = 100): PlacedPeer => ({
  id,
  stage,
  flopsPerSecond,
});
const even = [10, 10];

test('joiners go to the stage with the lowest rate, counting FLOPs per micro-batch', () => {
  expect(stageForJoiner([], even)).toBe(0);
  expect(stageForJoiner([peer('a', 0)], even)).toBe(1);
  expect(stageForJoiner([peer('a', 0), peer('b', 1)], even)).toBe(0);
  // Stage 1 costs three times as much per micro-batch: it needs more replicas.
  expect(stageForJoiner([peer('a', 0), peer('b', 1), peer('c', 1)], [10, 30])).toBe(1);
  // Unmeasured peers count as average ones.
  expect(stageRates([peer('a', 0, 300), peer('b', 1, null)], even)).toEqual([30, 30]);
});

test('with verification on, every stage gets a second replica before rates count, and keeps it', () => {
  // By rate alone the joiner would go to stage 1 (three times the FLOPs); stage 0 has one replica only.
  expect(stageForJoiner([peer('a', 0, 1e6), peer('b', 1)], [10, 30], 2)).toBe(0);
  expect(stageForJoiner([peer('a', 0, 1e6), peer('b', 1)], [10, 30], 1)).toBe(1);
  expect(stageForJoiner([peer('a', 0), peer('b', 0), peer('c', 1)], [10, 30], 2)).toBe(1);
  // An empty stage comes first.
  expect(stageForJoiner([peer('a', 0)], even, 2)).toBe(1);
  // A move that would leave a stage with one replica is not made.
  const placed = [peer('a', 0), peer('b', 0), peer('c', 1, 10), peer('d', 1, 10)];
  expect(rebalanceMove(placed, even)).not.toBeNull();
  expect(rebalanceMove(placed, even, 1.5, 2)).toBeNull();
});

test('a stage left empty gets a replica from a stage that has two', () => {
  expect(rebalanceMove([peer('a', 0), peer('b', 0)], even)).toEqual({ id: 'a', from: 0, to: 1 });
  expect(rebalanceMove([peer('a', 0)], even)).toBeNull();
});

test('replicas move only when the bottleneck rises by a clear margin', () => {
  // [3, 1] -> [2, 2] doubles the slowest stage's rate.
  expect(rebalanceMove([peer('a', 0), peer('b', 0), peer('c', 0), peer('d', 1)], even)).toMatchObject({
    from: 0,
    to: 1,
  });
  // [2, 1] -> [1, 2] changes nothing: no flapping.
  expect(rebalanceMove([peer('a', 0), peer('b', 0), peer('d', 1)], even)).toBeNull();
  // The move that lifts the bottleneck most: here a fast replica (stage rates 25/30) rather than the slow one (40/15).
  expect(
    rebalanceMove([peer('fast', 0, 200), peer('slow', 0, 50), peer('x', 0, 200), peer('d', 1, 100)], even),
  ).toMatchObject({ id: 'fast', to: 1 });
  // A 40% gain is below the margin; unmeasured peers never trigger a move unless a stage is empty.
  expect(rebalanceMove([peer('a', 0, 140), peer('b', 0, 140), peer('c', 1, 100)], [10, 10])).toBeNull();
  expect(rebalanceMove([peer('a', 0), peer('b', 0), peer('c', 0), peer('d', 1, null)], even)).toBeNull();
});
