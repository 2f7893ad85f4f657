import type { SubspaceBasis } from '../../shared/protocol/codec-subspace.js';
import type { StageRange } from '../model/config.js';
import { isFirstStage } from '../model/config.js';
import type { NamedTensor } from '../stage/types.js';

/**
 * A parameter kept in span(U) after every optimizer step. `rows`: every row (length width) is projected,
 * less its fixed part (the embeddings) or as is (a bias is one row); `columns`: a (width x in) output
 * projection, whose every column is projected, so that its output W a lies in span(U).
 */
export interface ProjectionTarget {
  name: string;
  kind: 'rows' | 'columns';
  /** The fixed part a row keeps outside span(U): the embeddings' (from the basis), none elsewhere. */
  fixed: 'token' | 'position' | null;
}

export function fixedPart(basis: SubspaceBasis, fixed: ProjectionTarget['fixed']): Float32Array | null {
  if (fixed === 'token') return basis.fixedToken;
  return fixed === 'position' ? basis.fixedPos : null;
}

/** What a stage keeps in span(U): its embeddings (first stage) and its constrained blocks' output projections. */
export function projectionTargets(
  range: StageRange,
  constrained: (block: number) => boolean,
): ProjectionTarget[] {
  const targets: ProjectionTarget[] = [];
  if (isFirstStage(range)) {
    targets.push({ name: 'wte', kind: 'rows', fixed: 'token' });
    targets.push({ name: 'wpe', kind: 'rows', fixed: 'position' });
  }
  for (let l = range.firstBlock; l < range.endBlock; l++) {
    if (!constrained(l)) continue;
    for (const part of ['attn', 'mlp']) {
      targets.push({ name: `blocks.${l}.${part}.proj.w`, kind: 'columns', fixed: null });
      targets.push({ name: `blocks.${l}.${part}.proj.b`, kind: 'rows', fixed: null });
    }
  }
  return targets;
}

/** The CPU projection of a stage's parameters, in place. */
export function projectParams(
  params: NamedTensor[],
  targets: ProjectionTarget[],
  basis: SubspaceBasis,
): void {
  for (const t of targets) {
    const p = params.find((x) => x.name === t.name);
    if (!p) throw new Error(`subspace projection: the stage has no parameter ${t.name}`);
    if (t.kind === 'rows')
      projectRows(p.data, basis.width, basis.basis, basis.rank, fixedPart(basis, t.fixed));
    else projectColumns(p.data, basis.width, basis.basis, basis.rank);
  }
}

/** Each row r of m (length width): r <- (r - f) U U^T + f, with f the same row of `fixed` (0 when null). */
export function projectRows(
  m: Float32Array,
  width: number,
  basis: Float32Array,
  rank: number,
  fixed: Float32Array | null,
): void {
  projectVectors(m, m.length / width, width, width, 1, basis, rank, fixed);
}

/** Each column of m (width x cols, row-major): c <- U U^T c. */
export function projectColumns(m: Float32Array, width: number, basis: Float32Array, rank: number): void {
  const cols = m.length / width;
  projectVectors(m, cols, width, 1, cols, basis, rank, null);
}

/** The CPU reference of the projection kernel (gpu/codec/subspace-kernels.ts): the same loops, in f64. */
function projectVectors(
  m: Float32Array,
  vectors: number,
  width: number,
  vecStride: number,
  elemStride: number,
  basis: Float32Array,
  rank: number,
  fixed: Float32Array | null,
): void {
  const c = new Float64Array(rank);
  for (let v = 0; v < vectors; v++) {
    c.fill(0);
    for (let i = 0; i < width; i++) {
      const at = v * vecStride + i * elemStride;
      const x = m[at]! - (fixed ? fixed[at]! : 0);
      for (let j = 0; j < rank; j++) c[j]! += x * basis[i * rank + j]!;
    }
    for (let i = 0; i < width; i++) {
      const at = v * vecStride + i * elemStride;
      let acc = fixed ? fixed[at]! : 0;
      for (let j = 0; j < rank; j++) acc += basis[i * rank + j]! * c[j]!;
      m[at] = acc;
    }
  }
}
