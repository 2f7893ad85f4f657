/**
 * A stage's full training state (weights, AdamW moments, step) as a safetensors file. Tensors are named
 * `param/<name>`, `adam_m/<name>` and `adam_v/<name>`; the step, model config and stage range go in the
 * metadata so a checkpoint cannot be loaded into a stage it does not fit.
 */
import type { GptConfig, StageRange } from '../model/config.js';
import { stageParams } from '../model/params.js';
import { checkNamedTensors } from '../stage/checks.js';
import type { NamedTensor, StageState } from '../stage/types.js';
import { decodeSafetensors, encodeSafetensors } from './safetensors.js';

export const stageCheckpointFormat = 'tributary-stage/1';

export interface StageCheckpointMeta {
  config: GptConfig;
  range: StageRange;
  /** Free-form strings kept alongside (run id, dataset position...); must not use the reserved keys. */
  extra?: Record<string, string>;
}

const reservedKeys = ['format', 'step', 'config', 'range'];
const groups = [
  { prefix: 'param/', key: 'params' },
  { prefix: 'adam_m/', key: 'm' },
  { prefix: 'adam_v/', key: 'v' },
] as const;

export function stageStateToSafetensors(state: StageState, meta: StageCheckpointMeta): Uint8Array {
  const specs = stageParams(meta.config, meta.range);
  if (!Number.isInteger(state.step) || state.step < 0)
    throw new Error(`checkpoint: step must be a non-negative integer, got ${state.step}`);
  const extra = meta.extra ?? {};
  for (const k of reservedKeys) {
    if (Object.hasOwn(extra, k))
      throw new Error(`checkpoint: extra metadata may not use the reserved key ${k}`);
  }
  const tensors: NamedTensor[] = [];
  for (const g of groups) {
    checkNamedTensors(g.key, state[g.key], specs);
    for (const t of state[g.key]) tensors.push({ name: g.prefix + t.name, shape: t.shape, data: t.data });
  }
  return encodeSafetensors(tensors, {
    ...extra,
    format: stageCheckpointFormat,
    step: String(state.step),
    config: canonical(meta.config, configKeys),
    range: canonical(meta.range, rangeKeys),
  });
}

/** Reads a stage checkpoint and checks it belongs to a stage with exactly this config and range. */
export function safetensorsToStageState(
  bytes: Uint8Array,
  expected: { config: GptConfig; range: StageRange },
): { state: StageState; meta: StageCheckpointMeta } {
  const { tensors, metadata } = decodeSafetensors(bytes);
  if (metadata.format !== stageCheckpointFormat) {
    throw new Error(
      `checkpoint: format is ${JSON.stringify(metadata.format)}, expected ${stageCheckpointFormat}`,
    );
  }
  const step = Number(metadata.step);
  if (metadata.step === undefined || !/^\d+$/.test(metadata.step) || !Number.isSafeInteger(step)) {
    throw new Error(`checkpoint: invalid step ${JSON.stringify(metadata.step)}`);
  }
  const config = parseJson('config', metadata.config);
  const range = parseJson('range', metadata.range);
  const wantConfig = canonical(expected.config, configKeys);
  const wantRange = canonical(expected.range, rangeKeys);
  if (canonical(config, configKeys) !== wantConfig) {
    throw new Error(`checkpoint: model config ${metadata.config} does not match this run's ${wantConfig}`);
  }
  if (canonical(range, rangeKeys) !== wantRange) {
    throw new Error(`checkpoint: stage range ${metadata.range} does not match this stage's ${wantRange}`);
  }

  const byName = new Map(tensors.map((t) => [t.name, t]));
  const specs = stageParams(expected.config, expected.range);
  const read = (prefix: string): NamedTensor[] =>
    specs.map((spec) => {
      const t = byName.get(prefix + spec.name);
      if (t === undefined) throw new Error(`checkpoint: tensor ${prefix}${spec.name} is missing`);
      byName.delete(prefix + spec.name);
      return { name: spec.name, shape: t.shape, data: t.data };
    });
  const state: StageState = { step, params: read('param/'), m: read('adam_m/'), v: read('adam_v/') };
  if (byName.size > 0) throw new Error(`checkpoint: unexpected tensor ${[...byName.keys()][0]}`);
  for (const g of groups) checkNamedTensors(g.key, state[g.key], specs);

  const extra = Object.fromEntries(Object.entries(metadata).filter(([k]) => !reservedKeys.includes(k)));
  return { state, meta: { config: expected.config, range: expected.range, extra } };
}

function parseJson(key: string, text: string | undefined): unknown {
  if (text === undefined) throw new Error(`checkpoint: metadata has no ${key}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`checkpoint: metadata ${key} is not valid JSON`);
  }
}

const configKeys = ['vocabSize', 'contextLength', 'width', 'heads', 'layers', 'mlpRatio'] as const;
const rangeKeys = ['index', 'count', 'firstBlock', 'endBlock'] as const;

/** The listed fields of a value, in a fixed order, as JSON text that compares equal when they do. */
function canonical(value: unknown, keys: readonly string[]): string {
  const obj = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  return JSON.stringify(Object.fromEntries(keys.map((k) => [k, obj[k]])));
}
