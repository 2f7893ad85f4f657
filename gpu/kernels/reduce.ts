import {
  Uniforms,
  bindOp,
  PipelineCache,
  computePipeline,
  declare,
  first,
  grid,
  launch,
  sequence,
  uniformBuffer,
  vec4Width,
} from './op.js';
import {
  type SegmentSource,
  bindableRuns,
  segmentTable,
  segmentTableBytes,
  spans,
  tableBuffer,
} from './segments.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 256;
/** Elements one workgroup folds into one partial: 16 per thread. */
export const REDUCE_CHUNK = WG * 16;

/** u32 fields per input in a partial launch's segment table: its offset (in E), length (in E), first workgroup. */
const SEGMENT_FIELDS = 3;

// WGSL lets compilers assume floats are finite, so `x != x` or comparisons with Inf may be folded away.
// The exponent bits cannot be: all ones means Inf or NaN.
const nonfinite = (vec4: boolean) => /* wgsl */ `
alias U = ${vec4 ? 'vec4u' : 'u32'};
fn nonfinite(x: E) -> u32 { return select(0u, 1u, any((bitcast<U>(x) & U(0x7f800000u)) == U(0x7f800000u))); }`;

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

/*
 * Workgroup g folds chunk g - first of its input (per the segment table) into partial base + g. E is vec4f when
 * every input's length is a multiple of 4: on CPU adapters each load costs per lane, and a vec4 shares that
 * cost among four elements.
 */
function partialShader(vec4: boolean): string {
  const chunk = REDUCE_CHUNK / (vec4 ? 4 : 1);
  return `${declare(['partials', 'flags: u32', 'inp: E', 'table: u32'], ['groups', 'base', 'square'])}
alias E = ${vec4 ? 'vec4f' : 'f32'};
fn hsum(x: E) -> f32 { return ${vec4 ? '(x.x + x.y) + (x.z + x.w)' : 'x'}; }
${workgroupArrays}
${nonfinite(vec4)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let g = wid.y * nwg.x + wid.x;
  if (g >= p.groups) { return; }
  let seg = p.groups + table[g] * ${SEGMENT_FIELDS}u;
  let at = table[seg];
  let start = (g - table[seg + 2u]) * ${chunk}u;
  let end = min(start + ${chunk}u, table[seg + 1u]);
  var sum = E(0.0);
  var flag = 0u;
  for (var j = start + lid.x; j < end; j += ${WG}u) {
    let x = inp[at + j];
    sum += select(x, x * x, p.square == 1u);
    flag |= nonfinite(x);
  }
  let acc = hsum(sum);
${treeReduce}
  if (lid.x == 0u) {
    partials[p.base + g] = sums[0];
    flags[p.base + g] = bad[0];
  }
}`;
}

const totalShader = `${declare(['result: u32', 'partials', 'flags: u32'], ['n', 'scale: f32'])}
alias E = f32;
${workgroupArrays}
${nonfinite(false)}
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

interface Input {
  ref: TensorRef;
  n: number;
}

/** Bytes of the segment tables a sum over inputs of these lengths creates (one launch: a bound for several). */
export function reduceTableBytes(lengths: readonly number[]): number {
  return segmentTableBytes(
    lengths.reduce((sum, n) => sum + partialCount(n), 0),
    lengths.length,
    SEGMENT_FIELDS,
  );
}

const SOURCE: SegmentSource<Input> = { refs: (t) => [t.ref], floats: (t) => t.n };

/**
 * Deterministic sums without atomics: each tensor folds into per-workgroup partials (all tensors in one launch
 * where their buffers allow), then one workgroup adds the partials in index order. Alongside, a bit test flags
 * any NaN or Inf among the inputs.
 */
export class Reduce {
  private readonly pipelines: PipelineCache;
  private readonly total: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.pipelines = new PipelineCache(device);
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
    inputs: readonly Input[];
    square: boolean;
    scale: number;
  }): EncodedOp {
    const l = a.square ? 'reduce.sumOfSquares' : 'reduce.sum';
    const count = a.inputs.reduce((s, t) => s + partialCount(t.n), 0);
    const partials = first(a.partials, count, l);
    const flags = first(a.flags, count, l);
    const inputs = a.inputs.map((t) => ({ ref: first(t.ref, t.n, l), n: t.n }));
    const runs = bindableRuns(inputs, SOURCE, this.device.limits.maxStorageBufferBindingSize, [
      partials,
      flags,
    ]);
    const ops: EncodedOp[] = [];
    let base = 0;
    for (const run of runs) {
      ops.push(this.partials(l, run, partials, flags, base, a.square));
      base += run.reduce((s, t) => s + partialCount(t.n), 0);
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

  private partials(
    l: string,
    run: readonly Input[],
    partials: TensorRef,
    flags: TensorRef,
    base: number,
    square: boolean,
  ): EncodedOp {
    const width = vec4Width(...run.map((t) => t.n));
    const head = run[0]!.ref;
    const { table, groups } = segmentTable(
      run.map((t) => partialCount(t.n)),
      SEGMENT_FIELDS,
      (i, firstGroup) => [(run[i]!.ref.offset - head.offset) / (4 * width), run[i]!.n / width, firstGroup],
    );
    const pipeline = this.pipelines.get(`reduce.partial x${width}`, () => partialShader(width === 4));
    const storage = [partials, flags, ...spans(run, SOURCE), tableBuffer(this.device, `${l}.table`, table)];
    const uniform = uniformBuffer(
      this.device,
      `${l}.partial`,
      new Uniforms()
        .u32(groups)
        .u32(base)
        .u32(square ? 1 : 0)
        .bytes(),
    );
    return bindOp(this.device, pipeline, `${l}.partial`, storage, [uniform], grid(groups, 1));
  }
}
