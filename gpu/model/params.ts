import { isFirstStage, isLastStage, type GptConfig, type StageRange } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  /** How the tensor is initialised. */
  init: 'normal' | 'zeros' | 'ones';
  /** Standard deviation for 'normal'. */
  std: number;
  /** Whether AdamW's weight decay applies (matrices and embeddings, not biases or LayerNorm). */
  decay: boolean;
}

/** One block's parameters, as llm.c's ParameterTensors names them (one layer's slice). */
export interface BlockParams<T> {
  ln1w: T;
  ln1b: T;
  qkvw: T;
  qkvb: T;
  attprojw: T;
  attprojb: T;
  ln2w: T;
  ln2b: T;
  fcw: T;
  fcb: T;
  fcprojw: T;
  fcprojb: T;
}

/** A stage's parameters by role: the embeddings on the first stage, the final LayerNorm and head on the last. */
export interface StageParamTensors<T> {
  embed: { wte: T; wpe: T } | null;
  blocks: BlockParams<T>[];
  head: { lnfw: T; lnfb: T; headw: T } | null;
}

/** The order of a block's tensors within the stage order. */
const blockParamKeys: readonly (keyof BlockParams<unknown>)[] = [
  'ln1w',
  'ln1b',
  'qkvw',
  'qkvb',
  'attprojw',
  'attprojb',
  'ln2w',
  'ln2b',
  'fcw',
  'fcb',
  'fcprojw',
  'fcprojb',
];

/**
 * Groups tensors given in stage order (params, grads, moments, GPU slots: anything with one entry per
 * `stageParams` spec) into their roles, so kernels take `blocks[i].qkvw` instead of looking names up.
 */
export function stageParamTensors<T>(range: StageRange, tensors: readonly T[]): StageParamTensors<T> {
  const expected =
    (isFirstStage(range) ? 2 : 0) +
    (range.endBlock - range.firstBlock) * blockParamKeys.length +
    (isLastStage(range) ? 3 : 0);
  if (tensors.length !== expected)
    throw new Error(`stage ${range.index} has ${expected} parameter tensors, got ${tensors.length}`);
  let i = 0;
  const next = (): T => tensors[i++]!;
  const embed = isFirstStage(range) ? { wte: next(), wpe: next() } : null;
  const blocks: BlockParams<T>[] = [];
  for (let l = range.firstBlock; l < range.endBlock; l++) {
    const block = {} as BlockParams<T>;
    for (const key of blockParamKeys) block[key] = next();
    blocks.push(block);
  }
  const head = isLastStage(range) ? { lnfw: next(), lnfb: next(), headw: next() } : null;
  return { embed, blocks, head };
}

/**
 * The parameters a stage owns, in the fixed order every export, gradient vector and checkpoint uses.
 * Matrices are stored as in llm.c: (out, in), so y = x W^T + b. Names are global (`blocks.5.mlp.fc.w`) so
 * the same parameter has the same name and the same initial values whichever stage holds it.
 */
export function stageParams(config: GptConfig, range: StageRange): ParamSpec[] {
  const C = config.width;
  const H = config.mlpRatio * C;
  const std = 0.02;
  // GPT-2 scales the residual projections by 1/sqrt(2L) so the residual stream's variance stays bounded.
  const residStd = 0.02 / Math.sqrt(2 * config.layers);
  const specs: ParamSpec[] = [];
  const mat = (name: string, shape: number[], s = std): ParamSpec => ({
    name,
    shape,
    init: 'normal',
    std: s,
    decay: true,
  });
  const vec = (name: string, n: number, init: 'zeros' | 'ones'): ParamSpec => ({
    name,
    shape: [n],
    init,
    std: 0,
    decay: false,
  });
  if (isFirstStage(range))
    specs.push(mat('wte', [config.vocabSize, C]), mat('wpe', [config.contextLength, C], 0.01));
  for (let l = range.firstBlock; l < range.endBlock; l++) {
    const p = `blocks.${l}.`;
    const block: BlockParams<ParamSpec> = {
      ln1w: vec(p + 'ln1.w', C, 'ones'),
      ln1b: vec(p + 'ln1.b', C, 'zeros'),
      qkvw: mat(p + 'attn.qkv.w', [3 * C, C]),
      qkvb: vec(p + 'attn.qkv.b', 3 * C, 'zeros'),
      attprojw: mat(p + 'attn.proj.w', [C, C], residStd),
      attprojb: vec(p + 'attn.proj.b', C, 'zeros'),
      ln2w: vec(p + 'ln2.w', C, 'ones'),
      ln2b: vec(p + 'ln2.b', C, 'zeros'),
      fcw: mat(p + 'mlp.fc.w', [H, C]),
      fcb: vec(p + 'mlp.fc.b', H, 'zeros'),
      fcprojw: mat(p + 'mlp.proj.w', [C, H], residStd),
      fcprojb: vec(p + 'mlp.proj.b', C, 'zeros'),
    };
    specs.push(...blockParamKeys.map((key) => block[key]));
  }
  if (isLastStage(range))
    specs.push(vec('lnf.w', C, 'ones'), vec('lnf.b', C, 'zeros'), mat('head.w', [config.vocabSize, C]));
  return specs;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function stageParamCount(config: GptConfig, range: StageRange): number {
  return stageParams(config, range).reduce((n, p) => n + numel(p.shape), 0);
}

/** FNV-1a of a string, to derive a per-parameter stream from the run seed. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: small, fast, and identical on every JavaScript engine. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Initial values of one parameter, a pure function of (seed, name, shape). */
export function initParam(spec: ParamSpec, seed: number): Float32Array {
  const out = new Float32Array(numel(spec.shape));
  if (spec.init === 'ones') return out.fill(1);
  if (spec.init === 'zeros') return out;
  const rand = mulberry32((Math.imul(seed >>> 0, 0x9e3779b1) ^ hashName(spec.name)) >>> 0);
  for (let i = 0; i < out.length; i += 2) {
    // Box–Muller; u1 is kept away from 0 so log() stays finite.
    const u1 = Math.max(rand(), 1e-12);
    const u2 = rand();
    const r = Math.sqrt(-2 * Math.log(u1)) * spec.std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** All of a stage's initial parameters, in stage order. */
export function initStageParams(config: GptConfig, range: StageRange, seed: number): Float32Array[] {
  return stageParams(config, range).map((spec) => initParam(spec, seed));
}
