import type { FlatState } from '../gpu/model/flat-state.js';
import { decodeBoundary } from '../shared/protocol/codec-tensor.js';
import type { Direction } from '../shared/protocol/codec.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type { Peer } from './peer.js';
import type { RunShape } from './run-config.js';
import { AttemptFailed } from './step-attempt.js';

/**
 * Magnitudes no honest stage produces: a tiny GPT's residual stream, gradients, weights and AdamW moments
 * stay many orders of magnitude below this. Beyond it a value is a fault or an attack, never training.
 */
export const ABSURD_MAGNITUDE = 1e6;

/** A cross-entropy loss is at least 0; far above ln(vocabulary) a model has diverged or a node lies. */
const MAX_LOSS = 1e3;

/** A node sent numbers that must never reach another node or the weights: it is dropped, the attempt replayed. */
export class Misbehaviour extends AttemptFailed {
  constructor(
    readonly peer: Peer,
    reason: string,
  ) {
    super(`node ${peer.shortId} ${reason}`);
    this.name = 'Misbehaviour';
  }
}

/** What is wrong with a block of numbers (the first bad one), or null. */
export function valuesProblem(what: string, data: Float32Array): string | null {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!Number.isFinite(x)) return `sent ${what} holding ${x} (index ${i})`;
    if (Math.abs(x) > ABSURD_MAGNITUDE)
      return `sent ${what} holding ${x} (index ${i}), beyond any honest value`;
  }
  return null;
}

export function lossProblem(loss: number): string | null {
  if (!Number.isFinite(loss) || loss < 0 || loss > MAX_LOSS)
    return `reported a loss of ${loss} (a cross-entropy loss lies in [0, ${MAX_LOSS}])`;
  return null;
}

/** Activations (forward) or their gradients (backward) as they cross a boundary, decoded when compressed. */
export function boundaryProblem(run: RunShape, tensor: Tensor, direction: Direction): string | null {
  const shape = { ...run.shape, width: run.model.width };
  let decoded: Float32Array;
  try {
    decoded = decodeBoundary(run.codec, tensor, shape, direction).data;
  } catch (err) {
    return `sent ${direction === 'forward' ? 'activations' : 'activation gradients'} that do not decode: ${(err as Error).message}`;
  }
  return valuesProblem(direction === 'forward' ? 'activations' : 'activation gradients', decoded);
}

/** A stage's exported weights and AdamW moments (checkpoints, a joiner's load). */
export function stateProblem(state: FlatState): string | null {
  return (
    valuesProblem('weights', state.params) ??
    valuesProblem('first moments', state.m) ??
    valuesProblem('second moments', state.v)
  );
}
