import type { FlatState } from '../gpu/model/flat-state.js';
import { valuesProblem } from '../shared/protocol/tensor-values.js';
import type { Peer } from './peer.js';
import { AttemptFailed } from './step-attempt.js';

export {
  ABSURD_MAGNITUDE,
  boundaryLimit,
  boundaryProblem,
  gradientLimit,
  sentProblem,
  summarizeValues,
  summaryProblem,
  valuesProblem,
} from '../shared/protocol/tensor-values.js';

/** A cross-entropy loss is at least 0; far above ln(vocabulary) a model has diverged or a node lies. */
const MAX_LOSS = 1e3;

/** An attempt failed because of what one node sent: the caller decides what becomes of `peer`. */
abstract class NodeFault extends AttemptFailed {
  constructor(
    readonly peer: Peer,
    reason: string,
  ) {
    super(`node ${peer.shortId} ${reason}`);
    this.name = new.target.name;
  }
}

/** A node sent numbers that must never reach another node or the weights: it is dropped, the attempt replayed. */
export class Misbehaviour extends NodeFault {}

/**
 * Mixed precision: `peer`'s scaled backward overflowed f16. Not its fault while the loss scale can still
 * halve (the step replays with half the scale); at the smallest scale it is treated as misbehaviour.
 */
export class Overflow extends NodeFault {}

export function lossProblem(loss: number): string | null {
  if (!Number.isFinite(loss) || loss < 0 || loss > MAX_LOSS)
    return `reported a loss of ${loss} (a cross-entropy loss lies in [0, ${MAX_LOSS}])`;
  return null;
}

/** A stage's exported weights and AdamW moments (checkpoints, a joiner's load). */
export function stateProblem(state: FlatState): string | null {
  return (
    valuesProblem('weights', state.params) ??
    valuesProblem('first moments', state.m) ??
    valuesProblem('second moments', state.v)
  );
}
