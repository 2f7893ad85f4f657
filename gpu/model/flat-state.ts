import type { FlatState } from '../../shared/protocol/stage-state.js';
import type { NamedTensor, StageState } from '../stage/types.js';
import type { GptConfig, StageRange } from './config.js';
import { initStageParams, numel, stageParamCount, stageParams } from './params.js';

export type { FlatState };

export function seedState(model: GptConfig, range: StageRange, seed: number): FlatState {
  const n = stageParamCount(model, range);
  return {
    optimizerStep: 0,
    params: concat(initStageParams(model, range, seed), n),
    m: new Float32Array(n),
    v: new Float32Array(n),
  };
}

function concat(parts: Float32Array[], n: number): Float32Array {
  const out = new Float32Array(n);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export function flatten(state: StageState, paramCount: number): FlatState {
  const cat = (tensors: NamedTensor[]): Float32Array =>
    concat(
      tensors.map((t) => t.data),
      paramCount,
    );
  return { optimizerStep: state.step, params: cat(state.params), m: cat(state.m), v: cat(state.v) };
}

export function unflatten(model: GptConfig, range: StageRange, flat: FlatState): StageState {
  const specs = stageParams(model, range);
  const split = (data: Float32Array): NamedTensor[] => {
    let offset = 0;
    return specs.map((spec) => {
      const n = numel(spec.shape);
      const t = { name: spec.name, shape: [...spec.shape], data: data.slice(offset, offset + n) };
      offset += n;
      return t;
    });
  };
  return { step: flat.optimizerStep, params: split(flat.params), m: split(flat.m), v: split(flat.v) };
}
