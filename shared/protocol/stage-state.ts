import type { Tensor } from './frame.js';
import type { TensorSpec } from './wire.js';

/** A stage's weights and AdamW moments, each flattened in parameter order, as they travel on the wire. */
export interface FlatState {
  optimizerStep: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export function stateSpec(paramCount: number): TensorSpec[] {
  return [0, 1, 2].map(() => ({ dtype: 'f32' as const, shape: [paramCount] }));
}

export function stateTensors(flat: FlatState): Tensor[] {
  return [flat.params, flat.m, flat.v].map((data) => ({ dtype: 'f32' as const, shape: [data.length], data }));
}

export function stateFromTensors(optimizerStep: number, tensors: Tensor[]): FlatState {
  const [params, m, v] = tensors.map((t) => t.data as Float32Array);
  return { optimizerStep, params: params!, m: m!, v: v! };
}
