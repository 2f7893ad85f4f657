import { describe, expect, it } from 'vitest';
import { GradientNorms, OUT_OF_LINE, STRIKES } from '../../coordinator/gradient-norms.js';

/** Contributions of one micro-batch each, by node name and norm. */
function step(norms: Record<string, number>) {
  return Object.entries(norms).map(([nodeId, norm]) => ({ peer: { nodeId }, norm, units: 1 }));
}

describe('gradient norms judged against the stage', () => {
  it('in line, a contribution is summed as it came (scale 1)', () => {
    const judged = new GradientNorms().judge(0, step({ a: 1, b: 2, c: 1.5 }));
    expect(judged.map((j) => [j.outOfLine, j.scale])).toEqual([
      [null, 1],
      [null, 1],
      [null, 1],
    ]);
  });

  it('of three, one over 4x the median is out of line and scaled down to the line', () => {
    const [, , c] = new GradientNorms().judge(1, step({ a: 1, b: 1.2, c: 12 }));
    expect(c!.outOfLine).toBe(
      'sent a gradient of norm 12.0 per work unit, 10.0x the median of the 3 replicas of stage 2 (1.20)',
    );
    expect(c!.norm * c!.scale).toBeCloseTo(OUT_OF_LINE * 1.2, 12);
  });

  it('norms are per work unit: more micro-batches, a larger norm, in line', () => {
    const judged = new GradientNorms().judge(0, [
      { peer: { nodeId: 'a' }, norm: 1, units: 1 },
      { peer: { nodeId: 'b' }, norm: 1, units: 1 },
      { peer: { nodeId: 'c' }, norm: 6, units: 3 },
    ]);
    expect(judged.every((j) => j.outOfLine === null)).toBe(true);
  });

  it(`refused the ${STRIKES}th time running; an in-line step starts the count again`, () => {
    const norms = new GradientNorms();
    const judgeAndCommit = (values: Record<string, number>) => {
      const judged = norms.judge(0, step(values));
      const refused = norms.refused(judged);
      if (!refused) norms.record([judged]);
      return refused;
    };
    expect(judgeAndCommit({ a: 1, b: 1, c: 10 })).toBeNull();
    expect(judgeAndCommit({ a: 1, b: 1, c: 1 })).toBeNull();
    for (let i = 1; i < STRIKES; i++) expect(judgeAndCommit({ a: 1, b: 1, c: 10 })).toBeNull();
    expect(judgeAndCommit({ a: 1, b: 1, c: 10 })).toMatchObject({
      peer: { nodeId: 'c' },
      reason: expect.stringMatching(new RegExp(`; ${STRIKES} steps running over ${OUT_OF_LINE}x$`)),
    });
  });

  it('of two, the history decides, and what was out of line stays out of it', () => {
    const norms = new GradientNorms();
    // No history yet: two norms alone cannot say which one lies.
    const first = norms.judge(0, step({ a: 1, b: 50 }));
    expect(first.every((j) => j.outOfLine === null)).toBe(true);
    // A stage's only replica builds the history.
    norms.record([norms.judge(0, step({ a: 1 }))]);
    for (let i = 0; i < STRIKES - 1; i++) {
      const judged = norms.judge(0, step({ a: 1, b: 50 }));
      expect(judged.map((j) => j.outOfLine === null)).toEqual([true, false]);
      expect(judged[1]!.outOfLine).toMatch(/50\.0x the recent steps of stage 1 \(1\.00\)/);
      norms.record([judged]);
    }
    expect(norms.refused(norms.judge(0, step({ a: 1, b: 50 })))?.peer.nodeId).toBe('b');
  });

  it('of two, both far above the history is the training moving: nobody is out of line', () => {
    const norms = new GradientNorms();
    norms.record([norms.judge(0, step({ a: 1, b: 1 }))]);
    expect(norms.judge(0, step({ a: 9, b: 11 })).every((j) => j.outOfLine === null)).toBe(true);
  });
});
