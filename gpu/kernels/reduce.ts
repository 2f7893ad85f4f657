import { Uniforms, computePipeline, declare, first, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 256;
/** Elements one workgroup folds into one partial: 16 per thread. */
export const REDUCE_CHUNK = WG * 16;

// WGSL lets compilers assume floats are finite, so `x != x` or comparisons with Inf may be folded away.
// The exponent bits cannot be: all ones means Inf or NaN.
const nonfinite = /* wgsl */ `
fn nonfinite(x: f32) -> u32 { return select(0u, 1u, (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u); }`;

/** Tree reduction of (sum, flag) over one workgroup; lane 0 ends with the total. The order is fixed. */
const treeReduce = /* wgsl */ `
  sums[lid.x] = acc;
  bad[lid.x] = flag;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      sums[lid.x] += sums[lid.x + s];
      bad[lid.x] |= bad[lid.x + s];
    }
    workgroupBarrier();
  }`;

const workgroupArrays = `var<workgroup> sums: array<f32, ${WG}>;\nvar<workgroup> bad: array<u32, ${WG}>;`;

const partialShader = `${declare(['partials', 'flags: u32', 'inp'], ['n', 'base', 'square'])}
${workgroupArrays}
${nonfinite}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let group = wid.y * nwg.x + wid.x;
  let start = group * ${REDUCE_CHUNK}u;
  var acc = 0.0;
  var flag = 0u;
  for (var j = start + lid.x; j < min(start + ${REDUCE_CHUNK}u, p.n); j += ${WG}u) {
    let x = inp[j];
    acc += select(x, x * x, p.square == 1u);
    flag |= nonfinite(x);
  }
${treeReduce}
  if (lid.x == 0u) {
    partials[p.base + group] = sums[0];
    flags[p.base + group] = bad[0];
  }
}`;

const totalShader = `${declare(['result: u32', 'partials', 'flags: u32'], ['n', 'scale: f32'])}
${workgroupArrays}
${nonfinite}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var acc = 0.0;
  var flag = 0u;
  for (var j = lid.x; j < p.n; j += ${WG}u) {
    acc += partials[j];
    flag |= flags[j];
  }
${treeReduce}
  if (lid.x == 0u) {
    let total = sums[0] * p.scale;
    result[0] = bitcast<u32>(total);
    result[1] = bad[0] | nonfinite(total);
  }
}`;

/** Number of partials {@link Reduce.sum} needs for a tensor of `n` elements. */
export function partialCount(n: number): number {
  return Math.max(1, Math.ceil(n / REDUCE_CHUNK));
}

/** Bytes of the `result` a reduction writes: the total (f32 bits) and a nonfinite flag (u32). */
export const REDUCE_RESULT_BYTES = 8;

/**
 * Deterministic sums without atomics: each tensor folds into per-workgroup partials, then one workgroup adds
 * the partials in index order. Alongside, a bit test flags any NaN or Inf among the inputs.
 */
export class Reduce {
  private readonly partial: GPUComputePipeline;
  private readonly total: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.partial = computePipeline(device, 'reduce.partial', partialShader);
    this.total = computePipeline(device, 'reduce.total', totalShader);
  }

  /**
   * result = scale * sum over the tensors of x (or x^2 when `square`), with result[1] = 1 if any input or the
   * total is NaN/Inf. `partials` (f32) and `flags` (u32) need the sum of partialCount(n) elements each.
   */
  sum(a: {
    result: TensorRef;
    partials: TensorRef;
    flags: TensorRef;
    inputs: readonly { ref: TensorRef; n: number }[];
    square: boolean;
    scale: number;
  }): EncodedOp {
    const l = a.square ? 'reduce.sumOfSquares' : 'reduce.sum';
    const count = a.inputs.reduce((s, t) => s + partialCount(t.n), 0);
    const partials = first(a.partials, count, l);
    const flags = first(a.flags, count, l);
    const ops: EncodedOp[] = [];
    let base = 0;
    for (const t of a.inputs) {
      const groups = partialCount(t.n);
      ops.push(
        launch(
          this.device,
          this.partial,
          `${l}.partial`,
          [partials, flags, first(t.ref, t.n, l)],
          new Uniforms().u32(t.n).u32(base).u32(a.square ? 1 : 0),
          grid(groups, 1),
        ),
      );
      base += groups;
    }
    ops.push(
      launch(
        this.device,
        this.total,
        `${l}.total`,
        [first(a.result, REDUCE_RESULT_BYTES / 4, l), partials, flags],
        new Uniforms().u32(count).f32(a.scale),
        [1, 1, 1],
      ),
    );
    return sequence(l, ops);
  }
}
