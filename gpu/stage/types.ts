import type { GptConfig, MicroBatchShape, StageRange } from '../model/config.js';

/** What flows into a stage: token ids on the first stage, the previous stage's residual stream elsewhere. */
export type StageInput = { kind: 'tokens'; tokens: Int32Array } | { kind: 'activations'; data: Float32Array };

/** On every stage but the last: the outgoing residual stream (batch*seq*width). On the last: the mean loss. */
export type StageForwardResult = { kind: 'activations'; data: Float32Array } | { kind: 'loss'; loss: number };

export interface AdamWSettings {
  learningRate: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One named tensor of a stage, in the stage's fixed parameter order. */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Everything needed to resume a stage bit-identically: weights, AdamW moments and the step counter. */
export interface StageState {
  step: number;
  params: NamedTensor[];
  m: NamedTensor[];
  v: NamedTensor[];
}

/**
 * One pipeline stage that trains. Implemented on WebGPU (gpu/engine) and on the CPU reference
 * (gpu/reference); both give the same numbers within the tolerances the tests state.
 *
 * A global step is: zeroGrad(); for each micro-batch: forward() then backward() (gradients accumulate);
 * optionally exportGrads()/importGrads() to average across replicas; gradSquaredNorm() on every stage,
 * summed by the caller into the global norm; step(settings, clipScale).
 */
export interface StageTrainer {
  readonly config: GptConfig;
  readonly range: StageRange;
  readonly shape: MicroBatchShape;
  /** Number of f32 parameters this stage owns. */
  readonly paramCount: number;

  /** Runs one micro-batch forward. The last stage needs `targets` (batch*seq token ids) and returns the loss. */
  forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult>;
  /**
   * Runs the micro-batch of the last forward() backward and adds its gradients to the accumulators.
   * The last stage takes `gradOut = null` and differentiates `lossScale * meanLoss`; other stages take the
   * gradient of their output. Returns the gradient of the stage input, or null on the first stage.
   */
  backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null>;
  /**
   * Micro-batches in flight (1F1B): how many may sit between forward() and backward() at once, bounded by
   * the engine's memory. Engines that leave the stash methods out hold one: the last forward's.
   */
  readonly stashCapacity?: number;
  /** Parks the activations of the last forward() under `id`, so further forwards can run before its backward. */
  stash?(id: number): Promise<void>;
  /** Makes the activations stashed under `id` the ones the next backward() differentiates, and frees the stash. */
  restore?(id: number): Promise<void>;
  /** Zeroes the gradient accumulators and drops every stash: a step starts with nothing in flight. */
  zeroGrad(): void;
  /** Squared L2 norm of the accumulated gradients, in a fixed reduction order. */
  gradSquaredNorm(): Promise<number>;
  /** The accumulated gradients, flattened in parameter order. */
  exportGrads(): Promise<Float32Array>;
  /** Replaces the accumulated gradients (after averaging across replicas). */
  importGrads(grads: Float32Array): Promise<void>;
  /** AdamW on the gradients multiplied by `clipScale` (1 when the global norm is under the limit). */
  step(settings: AdamWSettings, clipScale: number): Promise<void>;
  exportState(): Promise<StageState>;
  importState(state: StageState): Promise<void>;
  destroy(): void;
}
