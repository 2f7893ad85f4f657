import type { Peer } from './peer.js';

/** One replica's accumulated gradient of an attempt, reduced to what the checks need. */
export interface Contribution<P extends { nodeId: string } = Peer> {
  peer: P;
  /** Euclidean norm of the gradient it sent. */
  norm: number;
  /** Work units (micro-batches) it accumulated that gradient over. */
  units: number;
}

export interface Judged<P extends { nodeId: string } = Peer> extends Contribution<P> {
  /** How it is out of line with its stage, for a person to read; null when it is in line. */
  outOfLine: string | null;
  /**
   * What its gradient is multiplied by before it is summed: 1 in line (so a clean step is summed bit for
   * bit as before), else down to OUT_OF_LINE times the reference, so what passes moves the weights by that
   * much at most.
   */
  scale: number;
}

/**
 * A gradient whose norm per work unit is more than this many times its stage's reference is out of line.
 * Measured on honest runs (tiny config, 2 stages, 6 nodes, 40 steps, all CPU and CPU with GPU mixed): a
 * replica's norm per unit stayed within 2.3x of its stage's median (three or more replicas) and of its
 * stage's history (two), except in a loss spike, where one micro-batch's gradient was 9.5x the median and,
 * two steps later, another replica's 4.4x. A replica scaling by 10 measured 8.3x the median. So a single
 * out-of-line step is scaled down and counted, and STRIKES in a row are refused: a spike hits one
 * micro-batch, a scaling liar every step.
 */
export const OUT_OF_LINE = 4;

/** Out of line this many of its contributions running, a replica is refused (the last one never summed). */
export const STRIKES = 3;

/** Weight of the newest committed step in a stage's smoothed history. */
const SMOOTHING = 0.3;

/**
 * Tells a replica whose gradient is out of line with its stage, from each contributor's norm and work units:
 * against the median of the stage's replicas when it has three or more (one liar cannot move the median),
 * and against the stage's own smoothed history from committed steps when it has two (the norms of one
 * attempt cannot say which of two lies). One honest micro-batch can be far out of line during a loss
 * spike, but not every step: what is out of line is scaled down to the line, and a replica is refused when
 * it is out of line STRIKES times running.
 */
export class GradientNorms {
  /** Per stage, the smoothed median norm per work unit of its committed steps. */
  private readonly history = new Map<number, number>();
  /** Per node, how many of its committed contributions running were out of line. */
  private readonly streaks = new Map<string, number>();

  judge<P extends { nodeId: string }>(stage: number, contributions: readonly Contribution<P>[]): Judged<P>[] {
    const perUnit = contributions.map((c) => c.norm / c.units);
    const replicas = contributions.length;
    const past = this.history.get(stage);
    const [reference, against] =
      replicas >= 3
        ? [medianOf(perUnit), `the median of the ${replicas} replicas of stage ${stage + 1}`]
        : [past, `the recent steps of stage ${stage + 1}`];
    const compared = replicas >= 2 && reference !== undefined && reference > 0;
    const inLine = perUnit.map((x) => !compared || x <= OUT_OF_LINE * reference);
    // Every replica rising together is the training moving (a loss spike), not one of them lying.
    const judgeable = compared && inLine.some((ok) => ok);
    return contributions.map((c, i) =>
      judgeable && !inLine[i]
        ? {
            ...c,
            outOfLine:
              `sent a gradient of norm ${show(perUnit[i]!)} per work unit, ` +
              `${(perUnit[i]! / reference!).toFixed(1)}x ${against} (${show(reference!)})`,
            scale: (OUT_OF_LINE * reference!) / perUnit[i]!,
          }
        : { ...c, outOfLine: null, scale: 1 },
    );
  }

  /** A contributor out of line now and in its previous STRIKES - 1 committed contributions, with why. */
  refused<P extends { nodeId: string }>(judged: readonly Judged<P>[]): { peer: P; reason: string } | null {
    const liar = judged.find((j) => j.outOfLine && (this.streaks.get(j.peer.nodeId) ?? 0) >= STRIKES - 1);
    if (!liar) return null;
    return {
      peer: liar.peer,
      reason: `${liar.outOfLine}; ${STRIKES} steps running over ${OUT_OF_LINE}x`,
    };
  }

  /** Adds a committed step: per stage, its judged contributions (one for a stage's only replica). */
  record(committed: ReadonlyArray<readonly Judged<{ nodeId: string }>[]>): void {
    committed.forEach((judged, stage) => {
      if (judged.length === 0) return;
      for (const j of judged) {
        if (j.outOfLine) this.streaks.set(j.peer.nodeId, (this.streaks.get(j.peer.nodeId) ?? 0) + 1);
        else this.streaks.delete(j.peer.nodeId);
      }
      // What was out of line stays out of the history, or a liar of two would drag it up to itself.
      const median = medianOf(judged.filter((j) => !j.outOfLine).map((j) => j.norm / j.units));
      const past = this.history.get(stage);
      this.history.set(stage, past === undefined ? median : past + SMOOTHING * (median - past));
    });
  }
}

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function show(x: number): string {
  return x.toPrecision(3);
}
