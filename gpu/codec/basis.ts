import type { SubspaceBasis } from '../../shared/protocol/codec-subspace.js';
import { splitBlocks, type GptConfig } from '../model/config.js';
import { initParam, stageParams, type ParamSpec } from '../model/params.js';
import { projectRows } from './projection.js';

/** Private arrays in the projection kernel are sized for this; k is about width/100 in practice. */
export const MAX_SUBSPACE_RANK = 64;

/** Which blocks keep their output projections in span(U): those before the last stage's, or every one. */
export type ConstrainedBlocks = 'beforeLastStage' | 'all';

/**
 * The learned position embedding: `fixed` splits it like the token embedding (a fixed part outside span(U)
 * that every receiver rebuilds from the position, plus a learned part inside); `subspace` keeps all of it in
 * span(U), so nothing of it is fixed.
 */
export type PositionPart = 'fixed' | 'subspace';

/** The blocks whose attention and MLP output projections are constrained, as a predicate on block index. */
export function constrainedBlock(
  config: GptConfig,
  stages: number,
  which: ConstrainedBlocks,
): (block: number) => boolean {
  if (which === 'all') return () => true;
  const lastFirst = splitBlocks(config, stages).at(-1)!.firstBlock;
  return (block) => block < lastFirst;
}

/**
 * U: a Gaussian width x rank matrix drawn from the run seed, orthonormalised by modified Gram-Schmidt in
 * f64, so every node derives the same bits. The fixed embedding parts are the initial token and position
 * embeddings' components outside span(U); they never train and every receiver rebuilds them from the seed.
 */
export function buildSubspaceBasis(
  config: GptConfig,
  seed: number,
  rank: number,
  positions: PositionPart = 'subspace',
): SubspaceBasis {
  const C = config.width;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(C, MAX_SUBSPACE_RANK)) {
    throw new Error(`subspace rank must be an integer in 1..${Math.min(C, MAX_SUBSPACE_RANK)}, got ${rank}`);
  }
  const draw = initParam(
    { name: 'subspace.basis', shape: [C, rank], init: 'normal', std: 1, decay: false },
    seed,
  );
  const cols = Array.from({ length: rank }, (_, j) =>
    Float64Array.from({ length: C }, (_, i) => draw[i * rank + j]!),
  );
  for (let j = 0; j < rank; j++) {
    const v = cols[j]!;
    for (let q = 0; q < j; q++) {
      const u = cols[q]!;
      let dot = 0;
      for (let i = 0; i < C; i++) dot += u[i]! * v[i]!;
      for (let i = 0; i < C; i++) v[i]! -= dot * u[i]!;
    }
    const norm = Math.hypot(...v);
    if (norm < 1e-9) throw new Error('subspace basis: a drawn column is degenerate; pick another seed');
    for (let i = 0; i < C; i++) v[i]! /= norm;
  }
  const basis = new Float32Array(C * rank);
  for (let i = 0; i < C; i++) for (let j = 0; j < rank; j++) basis[i * rank + j] = cols[j]![i]!;
  const first = stageParams(config, { index: 0, count: 1, firstBlock: 0, endBlock: 1 });
  const embedding = (name: string): ParamSpec => first.find((s) => s.name === name)!;
  const outside = (spec: ParamSpec): Float32Array => {
    const init = initParam(spec, seed);
    const inside = init.slice();
    projectRows(inside, C, basis, rank, null);
    for (let i = 0; i < init.length; i++) init[i]! -= inside[i]!;
    return init;
  };
  return {
    width: C,
    rank,
    basis,
    fixedToken: outside(embedding('wte')),
    fixedPos: positions === 'fixed' ? outside(embedding('wpe')) : new Float32Array(config.contextLength * C),
  };
}
