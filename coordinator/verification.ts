import { decodeBoundary } from '../shared/protocol/codec-tensor.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type { Peer } from './peer.js';
import type { RunShape } from './run-config.js';

/**
 * What a stage computed for a micro-batch, as checked: its forward's activations (any stage but the last) or
 * the last stage's loss; its backward's gradient of the stage input (any stage but the first).
 */
export type StageOutput =
  | { kind: 'activations'; tensor: Tensor }
  | { kind: 'loss'; loss: number }
  | { kind: 'gradient'; tensor: Tensor };

/**
 * Relative max-abs difference of two outputs: max |a - b| over max |a| (a loss: |a - b| / |a|).
 * Cross-device rounding stays far below 1e-3 on a tiny GPT; a node that does not run the model lands near 1.
 */
export function outputDifference(run: RunShape, a: StageOutput, b: StageOutput): number {
  if (a.kind === 'loss' || b.kind === 'loss') {
    if (a.kind !== 'loss' || b.kind !== 'loss') return Infinity;
    return Math.abs(a.loss - b.loss) / Math.max(Math.abs(a.loss), 1e-6);
  }
  if (a.kind !== b.kind) return Infinity;
  const shape = { ...run.shape, width: run.model.width };
  const direction = a.kind === 'gradient' ? 'backward' : 'forward';
  const x = decodeBoundary(run.codec, a.tensor, shape, direction).data;
  const y = decodeBoundary(run.codec, b.tensor, shape, direction).data;
  if (x.length !== y.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
    scale = Math.max(scale, Math.abs(x[i]!));
  }
  return diff / Math.max(scale, 1e-6);
}

/** How a check ended: every answer agreed, one node was outvoted, or no majority could be found. */
export type Verdict =
  | { kind: 'agreed' }
  | { kind: 'wrong'; peer: Peer; difference: number; by: 'referee' | 'repeat' }
  | { kind: 'disputed' };

/**
 * One sampled micro-batch of one stage, its forward or its backward, computed by its primary replica and
 * recomputed by others. Two
 * answers that agree settle it. On disagreement a third replica referees and the majority wins; with no
 * third replica both disputants recompute once more, and one whose second answer differs from its own
 * first (an honest engine is deterministic on its own device) is proven wrong. Otherwise no one is trusted.
 */
export class RecomputeCheck {
  private readonly answers: Array<{ peer: Peer; output: StageOutput }> = [];
  private readonly repeats = new Map<Peer, StageOutput>();

  constructor(
    private readonly run: RunShape,
    private readonly tolerance: number,
    readonly primary: Peer,
    readonly duplicate: Peer,
  ) {}

  private agree(a: StageOutput, b: StageOutput): boolean {
    return outputDifference(this.run, a, b) <= this.tolerance;
  }

  /**
   * Records `peer`'s answer. Returns the verdict once there is one, `{ referee }` / `{ repeat }` when more
   * answers are needed (the caller sends those tasks), or null while answers are outstanding.
   */
  answer(
    peer: Peer,
    output: StageOutput,
    referees: Peer[],
  ): Verdict | { need: 'referee'; peer: Peer } | { need: 'repeat' } | null {
    const first = this.answers.find((a) => a.peer === peer);
    if (first) this.repeats.set(peer, output);
    else this.answers.push({ peer, output });
    const [a, b, c] = this.answers;
    if (!a || !b) return null;
    if (this.answers.length === 2 && this.repeats.size === 0) {
      if (this.agree(a.output, b.output)) return { kind: 'agreed' };
      const referee = referees.find((p) => p !== a.peer && p !== b.peer);
      return referee ? { need: 'referee', peer: referee } : { need: 'repeat' };
    }
    if (c) {
      const withA = this.agree(c.output, a.output);
      const withB = this.agree(c.output, b.output);
      if (withA === withB) return { kind: 'disputed' };
      const loser = withA ? b : a;
      return {
        kind: 'wrong',
        peer: loser.peer,
        difference: outputDifference(this.run, c.output, loser.output),
        by: 'referee',
      };
    }
    if (this.repeats.size < 2) return null;
    const unstable = [a, b].filter((x) => !this.agree(x.output, this.repeats.get(x.peer)!));
    if (unstable.length !== 1) return { kind: 'disputed' };
    const liar = unstable[0]!;
    return {
      kind: 'wrong',
      peer: liar.peer,
      difference: outputDifference(this.run, liar.output, this.repeats.get(liar.peer)!),
      by: 'repeat',
    };
  }
}
