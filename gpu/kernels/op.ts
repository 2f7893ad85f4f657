import type { EncodedOp, TensorRef } from './types.js';

/** WebGPU's cap on workgroups per dispatch dimension; bigger grids fold into y. */
const MAX_GROUPS_PER_DIM = 65535;

/**
 * The grid for `items` work items in workgroups of `size`, folded into two dimensions when it is too wide.
 * Shaders recover the flat index with {@link flatIndexWgsl}.
 */
export function grid(items: number, size: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(items / size));
  if (groups <= MAX_GROUPS_PER_DIM) return [groups, 1, 1];
  const y = Math.ceil(groups / MAX_GROUPS_PER_DIM);
  return [Math.ceil(groups / y), y, 1];
}

/** WGSL: `flatIndex(wid, nwg, lid)` for a grid from {@link grid} with workgroup size `size`. */
export function flatIndexWgsl(size: number): string {
  return /* wgsl */ `
fn flatIndex(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
  return (wid.y * nwg.x + wid.x) * ${size}u + lid.x;
}`;
}

/** Packs a uniform block of 4-byte scalars in field order, padded to WebGPU's 16-byte granule. */
export class Uniforms {
  private readonly words: { kind: 'u' | 'f'; value: number }[] = [];

  u32(value: number): this {
    this.words.push({ kind: 'u', value });
    return this;
  }

  f32(value: number): this {
    this.words.push({ kind: 'f', value });
    return this;
  }

  bytes(): ArrayBuffer {
    const buffer = new ArrayBuffer(Math.max(16, Math.ceil((this.words.length * 4) / 16) * 16));
    const view = new DataView(buffer);
    this.words.forEach((w, i) => {
      if (w.kind === 'u') view.setUint32(i * 4, w.value, true);
      else view.setFloat32(i * 4, w.value, true);
    });
    return buffer;
  }
}

/** A uniform buffer holding `data`, created once when an op is built. */
export function uniformBuffer(device: GPUDevice, label: string, data: ArrayBuffer): GPUBuffer {
  const buffer = device.createBuffer({
    label,
    size: data.byteLength,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, data);
  return buffer;
}

export function computePipeline(device: GPUDevice, label: string, code: string): GPUComputePipeline {
  return device.createComputePipeline({
    label,
    layout: 'auto',
    compute: { module: device.createShaderModule({ label, code }), entryPoint: 'main' },
  });
}

/** Pipelines of a kernel with several shader variants, compiled on first use; `code` runs only then. */
export class PipelineCache {
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(private readonly device: GPUDevice) {}

  /** The pipeline labelled `label`, which also names the variant. */
  get(label: string, code: () => string): GPUComputePipeline {
    let pipeline = this.pipelines.get(label);
    if (!pipeline) {
      pipeline = computePipeline(this.device, label, code());
      this.pipelines.set(label, pipeline);
    }
    return pipeline;
  }
}

/**
 * Elements a thread takes per load: 4 (vec4) when every length divides by 4, else 1. On CPU adapters each load
 * costs per lane, so a vec4 shares that cost among four elements.
 */
export function vec4Width(...lengths: number[]): 1 | 4 {
  return lengths.every((n) => n % 4 === 0) ? 4 : 1;
}

/**
 * Binds storage tensors to bindings 0..n-1 and uniform buffers after them, once, and returns the launch.
 * The pipeline's shader must declare its bindings in that order.
 */
export function bindOp(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  label: string,
  storage: readonly TensorRef[],
  uniforms: readonly GPUBuffer[],
  workgroups: readonly [number, number, number],
): EncodedOp {
  const entries: GPUBindGroupEntry[] = storage.map((t, i) => ({
    binding: i,
    resource: { buffer: t.buffer, offset: t.offset, size: t.size },
  }));
  uniforms.forEach((u, i) => entries.push({ binding: storage.length + i, resource: { buffer: u } }));
  const bindGroup = device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
  const [x, y, z] = workgroups;
  return {
    label,
    encode(pass: GPUComputePassEncoder): void {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    },
  };
}

/** Checks that a tensor holds at least `floats` 4-byte elements before a kernel reads or writes them. */
export function need(ref: TensorRef, floats: number, what: string): void {
  if (ref.size < floats * 4)
    throw new Error(`${what}: needs ${floats} elements (${floats * 4} bytes), got ${ref.size} bytes`);
}

/**
 * WGSL declarations for storage bindings 0..n-1 (f32 arrays unless `name: type` says otherwise) and a uniform
 * struct `p` of u32/f32 fields after them. Every storage binding is read_write: the engine packs many tensors
 * into one buffer, and WebGPU refuses a dispatch that binds one buffer both read-only and writable.
 */
export function declare(storage: readonly string[], uniformFields: readonly string[]): string {
  const decls = storage.map((entry, i) => {
    const [name, type = 'f32'] = entry.split(':').map((s) => s.trim());
    return `@group(0) @binding(${i}) var<storage, read_write> ${name}: array<${type}>;`;
  });
  const fields = uniformFields.map((f) => (f.includes(':') ? f : `${f}: u32`)).join(', ');
  return `${decls.join('\n')}\nstruct Params { ${fields} }\n@group(0) @binding(${storage.length}) var<uniform> p: Params;\n`;
}

/** WGSL entry-point header for a flat 1-D kernel: `i` is the work item. */
export function flatMain(size: number): string {
  return `${flatIndexWgsl(size)}
@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = flatIndex(wid, nwg, lid);`;
}

/** {@link bindOp} with one uniform block built from `params`. */
export function launch(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  label: string,
  storage: readonly TensorRef[],
  params: Uniforms,
  workgroups: readonly [number, number, number],
): EncodedOp {
  return bindOp(device, pipeline, label, storage, [uniformBuffer(device, label, params.bytes())], workgroups);
}

/** A sub-range of `ref` holding exactly `floats` f32 values, so a binding never covers its neighbours. */
export function first(ref: TensorRef, floats: number, what: string): TensorRef {
  need(ref, floats, what);
  return { buffer: ref.buffer, offset: ref.offset, size: floats * 4 };
}

/** Several launches recorded back to back as one op. */
export function sequence(label: string, ops: readonly EncodedOp[]): EncodedOp {
  return {
    label,
    encode(pass: GPUComputePassEncoder): void {
      for (const op of ops) op.encode(pass);
    },
  };
}
