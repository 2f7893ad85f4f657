import type { GptConfig, MicroBatchShape, StageRange } from '../model/config.js';
import { numel, type ParamSpec } from '../model/params.js';
import type { NamedTensor } from './types.js';

/** Readable errors for the inputs every StageTrainer implementation validates the same way. */

export function checkRange(config: GptConfig, range: StageRange): void {
  const ok =
    Number.isInteger(range.count) &&
    range.count >= 1 &&
    Number.isInteger(range.index) &&
    range.index >= 0 &&
    range.index < range.count &&
    Number.isInteger(range.firstBlock) &&
    Number.isInteger(range.endBlock) &&
    range.firstBlock >= 0 &&
    range.firstBlock <= range.endBlock &&
    range.endBlock <= config.layers;
  if (!ok) throw new Error(`invalid stage range ${JSON.stringify(range)} for a ${config.layers}-block model`);
}

export function checkShape(config: GptConfig, shape: MicroBatchShape): void {
  if (!Number.isInteger(shape.batch) || shape.batch < 1)
    throw new Error(`batch must be a positive integer, got ${shape.batch}`);
  if (!Number.isInteger(shape.seq) || shape.seq < 1 || shape.seq > config.contextLength) {
    throw new Error(`seq must be an integer in [1, ${config.contextLength}], got ${shape.seq}`);
  }
}

export function checkTokenIds(what: string, ids: Int32Array, n: number, vocab: number): void {
  if (ids.length !== n) throw new Error(`${what} must have ${n} ids (batch*seq), got ${ids.length}`);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= vocab)
      throw new Error(`${what}[${i}] = ${id} is outside the vocabulary [0, ${vocab})`);
  }
}

export function checkLength(what: string, data: ArrayLike<number>, n: number, meaning: string): void {
  if (data.length !== n) throw new Error(`${what} must have ${n} values (${meaning}), got ${data.length}`);
}

/** Throws unless `tensors` are exactly the stage's parameters, in order, with their shapes. */
export function checkNamedTensors(
  what: string,
  tensors: readonly NamedTensor[],
  specs: readonly ParamSpec[],
): void {
  if (tensors.length !== specs.length)
    throw new Error(`state.${what} has ${tensors.length} tensors, the stage has ${specs.length}`);
  specs.forEach((spec, i) => {
    const t = tensors[i]!;
    if (t.name !== spec.name) throw new Error(`state.${what}[${i}] is ${t.name}, expected ${spec.name}`);
    if (t.shape.join(',') !== spec.shape.join(',') || t.data.length !== numel(spec.shape)) {
      throw new Error(
        `state.${what} ${t.name} has shape [${t.shape}] and ${t.data.length} values, expected [${spec.shape}]`,
      );
    }
  });
}

/** Throws when a value the engine hands on (activations, input gradients) holds NaN or Inf. */
export function checkFinite(what: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new NonFiniteError(`${what}[${i}] is ${data[i]}`);
  }
}

/** Training produced NaN or Inf: the step must not be applied. */
export class NonFiniteError extends Error {
  constructor(detail: string) {
    super(`training diverged: ${detail}; lower the learning rate or restore the last checkpoint`);
    this.name = 'NonFiniteError';
  }
}
