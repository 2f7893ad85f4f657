import {
  PipelineCache,
  Uniforms,
  bindOp,
  declare,
  flatMain,
  grid,
  need,
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
import type { AdamWSettings } from '../stage/types.js';

const WG = 256;
/** u32 fields per tensor in the segment table: offsets of param, grad, m and v, n, decay, first workgroup. */
const SEGMENT_FIELDS = 7;

/*
 * One launch updates many tensors. `table` maps each workgroup to its tensor, then holds each tensor's segment:
 * where its param, grad, m and v start within the launch's four bindings, its length, whether it decays, and
 * its first workgroup, all in units of E. E is vec4f when every length is a multiple of 4: on CPU adapters a
 * load costs per lane, so one vec4 load (and one table lookup) for four elements is ~3x faster. The arithmetic
 * per element is the same either way.
 */
function shader(vec4: boolean): string {
  const E = vec4 ? 'vec4f' : 'f32';
  return `${declare([`param: ${E}`, `grad: ${E}`, `m: ${E}`, `v: ${E}`, 'table: u32'], ['groups'])}
struct Step { lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, c1: f32, c2: f32, gradScale: f32 }
@group(0) @binding(6) var<uniform> s: Step;
${flatMain(WG)}
  let g = i / ${WG}u;
  if (g >= p.groups) { return; }
  let seg = p.groups + table[g] * ${SEGMENT_FIELDS}u;
  let j = (g - table[seg + 6u]) * ${WG}u + lid.x;
  if (j >= table[seg + 4u]) { return; }
  let decay = f32(table[seg + 5u]);
  let pi = table[seg] + j;
  let gi = table[seg + 1u] + j;
  let mi = table[seg + 2u] + j;
  let vi = table[seg + 3u] + j;
  let gr = grad[gi] * s.gradScale;
  let m1 = s.beta1 * m[mi] + (1.0 - s.beta1) * gr;
  let v1 = s.beta2 * v[vi] + (1.0 - s.beta2) * gr * gr;
  m[mi] = m1;
  v[vi] = v1;
  let x = param[pi];
  param[pi] = x - s.lr * ((m1 / s.c1) / (sqrt(v1 / s.c2) + s.eps) + s.weightDecay * decay * x);
}`;
}

/** One tensor's optimizer state; decay says whether weight decay applies to it. */
export interface AdamWTensor {
  param: TensorRef;
  grad: TensorRef;
  m: TensorRef;
  v: TensorRef;
  n: number;
  decay: boolean;
}

const ROLES = ['param', 'grad', 'm', 'v'] as const;

/** Bytes of the segment tables for tensors of these lengths (all in one launch: an upper bound for several). */
export function adamwTableBytes(lengths: readonly number[]): number {
  // Scalar lengths bound the vec4 table too.
  const groups = lengths.reduce((sum, n) => sum + Math.ceil(n / WG), 0);
  return segmentTableBytes(groups, lengths.length, SEGMENT_FIELDS);
}

const SOURCE: SegmentSource<AdamWTensor> = { refs: (t) => ROLES.map((r) => t[r]), floats: (t) => t.n };

/**
 * AdamW with bias correction and decoupled weight decay over all of a stage's tensors in as few launches as
 * the buffers allow (usually one): a launch per tensor cost a fixed dispatch overhead ~50 times a step. The
 * step's settings live in one small uniform shared by every launch of an {@link AdamW}, rewritten before each
 * step.
 */
export class AdamW {
  private readonly pipelines: PipelineCache;
  private readonly stepUniform: GPUBuffer;

  constructor(private readonly device: GPUDevice) {
    this.pipelines = new PipelineCache(device);
    this.stepUniform = uniformBuffer(device, 'adamw.step', new ArrayBuffer(32));
  }

  /** Updates param, m and v of every tensor in place. */
  updateAll(tensors: readonly AdamWTensor[]): EncodedOp[] {
    for (const t of tensors) for (const r of ROLES) need(t[r], t.n, `adamw ${r}`);
    return bindableRuns(tensors, SOURCE, this.device.limits.maxStorageBufferBindingSize).map((run) =>
      this.launch(run),
    );
  }

  private launch(run: readonly AdamWTensor[]): EncodedOp {
    const l = 'adamw';
    const head = run[0]!;
    const width = vec4Width(...run.map((t) => t.n));
    const { table, groups } = segmentTable(
      run.map((t) => Math.ceil(t.n / width / WG)),
      SEGMENT_FIELDS,
      (i, firstGroup) => {
        const t = run[i]!;
        const offsets = ROLES.map((r) => (t[r].offset - head[r].offset) / (4 * width));
        return [...offsets, t.n / width, t.decay ? 1 : 0, firstGroup];
      },
    );
    const storage = [...spans(run, SOURCE), tableBuffer(this.device, 'adamw.table', table)];
    const uniform = uniformBuffer(this.device, l, new Uniforms().u32(groups).bytes());
    return bindOp(
      this.device,
      this.pipelines.get(`adamw x${width}`, () => shader(width === 4)),
      l,
      storage,
      [uniform, this.stepUniform],
      grid(groups * WG, WG),
    );
  }

  /** Sets the settings of the next submitted update; `step` is the 1-based step number. */
  setStep(settings: AdamWSettings, step: number, gradScale: number): void {
    const u = new Uniforms()
      .f32(settings.learningRate)
      .f32(settings.beta1)
      .f32(settings.beta2)
      .f32(settings.eps)
      .f32(settings.weightDecay)
      .f32(1 - Math.pow(settings.beta1, step))
      .f32(1 - Math.pow(settings.beta2, step))
      .f32(gradScale);
    this.device.queue.writeBuffer(this.stepUniform, 0, u.bytes());
  }
}
