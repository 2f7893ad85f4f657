import { Uniforms, bindOp, computePipeline, declare, flatMain, grid, need, uniformBuffer } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';
import type { AdamWSettings } from '../stage/types.js';

const WG = 256;
/** u32 fields per tensor in the segment table: offsets of param, grad, m and v, n, decay, first workgroup. */
const SEGMENT_FIELDS = 8;

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
  return 4 * (groups + SEGMENT_FIELDS * lengths.length);
}

/** The byte range each role of `run` binds. */
function spans(run: readonly AdamWTensor[]): { buffer: GPUBuffer; offset: number; size: number }[] {
  const head = run[0]!;
  const last = run[run.length - 1]!;
  return ROLES.map((r) => ({
    buffer: head[r].buffer,
    offset: head[r].offset,
    size: last[r].offset + 4 * last.n - head[r].offset,
  }));
}

/**
 * Whether one launch can bind `run`: each role in one GPUBuffer, its tensors in increasing order, within the
 * binding limit, and no two roles' ranges overlapping (WebGPU refuses aliased writable bindings).
 */
function bindable(run: readonly AdamWTensor[], maxBinding: number): boolean {
  const head = run[0]!;
  for (const t of run) {
    if (!ROLES.every((r) => t[r].buffer === head[r].buffer && t[r].offset >= head[r].offset)) return false;
  }
  const s = spans(run);
  return s.every(
    (a, i) =>
      a.size <= maxBinding &&
      s.every(
        (b, j) =>
          j <= i || a.buffer !== b.buffer || a.offset + a.size <= b.offset || b.offset + b.size <= a.offset,
      ),
  );
}

/** Splits tensors into consecutive runs that one launch each can bind. */
function runs(tensors: readonly AdamWTensor[], maxBinding: number): AdamWTensor[][] {
  const out: AdamWTensor[][] = [];
  let run: AdamWTensor[] = [];
  for (const t of tensors) {
    if (run.length > 0 && !bindable([...run, t], maxBinding)) {
      out.push(run);
      run = [];
    }
    run.push(t);
  }
  if (run.length > 0) out.push(run);
  return out;
}

/**
 * AdamW with bias correction and decoupled weight decay over all of a stage's tensors in as few launches as
 * the buffers allow (usually one): a launch per tensor cost a fixed dispatch overhead ~50 times a step. The
 * step's settings live in one small uniform shared by every launch of an {@link AdamW}, rewritten before each
 * step.
 */
export class AdamW {
  private readonly pipelines = new Map<boolean, GPUComputePipeline>();
  private readonly stepUniform: GPUBuffer;

  constructor(private readonly device: GPUDevice) {
    this.stepUniform = uniformBuffer(device, 'adamw.step', new ArrayBuffer(32));
  }

  /** Updates param, m and v of every tensor in place. */
  updateAll(tensors: readonly AdamWTensor[]): EncodedOp[] {
    for (const t of tensors) for (const r of ROLES) need(t[r], t.n, `adamw ${r}`);
    const limit = this.device.limits.maxStorageBufferBindingSize;
    for (const t of tensors)
      if (!bindable([t], limit)) throw new Error("adamw: a tensor's param, grad, m and v must not overlap");
    return runs(tensors, limit).map((run) => this.launch(run));
  }

  private pipeline(vec4: boolean): GPUComputePipeline {
    let p = this.pipelines.get(vec4);
    if (!p) {
      p = computePipeline(this.device, vec4 ? 'adamw vec4' : 'adamw', shader(vec4));
      this.pipelines.set(vec4, p);
    }
    return p;
  }

  private launch(run: readonly AdamWTensor[]): EncodedOp {
    const l = 'adamw';
    const head = run[0]!;
    const width = run.every((t) => t.n % 4 === 0) ? 4 : 1;
    const groups = run.reduce((sum, t) => sum + Math.ceil(t.n / width / WG), 0);
    const table = new Uint32Array(groups + SEGMENT_FIELDS * run.length);
    let group = 0;
    run.forEach((t, index) => {
      const seg = groups + SEGMENT_FIELDS * index;
      ROLES.forEach((r, f) => (table[seg + f] = (t[r].offset - head[r].offset) / (4 * width)));
      table[seg + 4] = t.n / width;
      table[seg + 5] = t.decay ? 1 : 0;
      table[seg + 6] = group;
      const count = Math.ceil(t.n / width / WG);
      table.fill(index, group, group + count);
      group += count;
    });
    const tableBuffer = this.device.createBuffer({
      label: 'adamw.table',
      size: table.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(tableBuffer, 0, table);
    const storage = [...spans(run), { buffer: tableBuffer, offset: 0, size: table.byteLength }];
    const uniform = uniformBuffer(this.device, l, new Uniforms().u32(groups).bytes());
    return bindOp(
      this.device,
      this.pipeline(width === 4),
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
