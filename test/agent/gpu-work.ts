/**
 * A real GPU work unit for pacing tests and the agent benchmark: one compute dispatch of a dependent FMA
 * chain, awaited with onSubmittedWorkDone. `calibrate` sizes it to roughly the wanted milliseconds.
 */
const SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<uniform> params: vec4<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var x = data[id.x];
  for (var i = 0u; i < params.x; i++) { x = fma(x, 0.9999999, 0.0000001); }
  data[id.x] = x;
}`;

const WORKGROUPS = 32;

export interface GpuWork {
  /** Runs one unit; resolves with the milliseconds the GPU was busy (submit to completion). */
  unit(): Promise<number>;
  calibrate(targetMs: number): Promise<void>;
  destroy(): void;
}

export function createGpuWork(device: GPUDevice): GpuWork {
  const data = device.createBuffer({ size: WORKGROUPS * 64 * 4, usage: GPUBufferUsage.STORAGE });
  const params = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const pipeline = device.createComputePipeline({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code: SHADER }), entryPoint: 'main' },
  });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: data } },
      { binding: 1, resource: { buffer: params } },
    ],
  });
  let iterations = 1000;
  const setIterations = (n: number): void => {
    iterations = Math.max(1, Math.round(n));
    device.queue.writeBuffer(params, 0, new Uint32Array([iterations, 0, 0, 0]));
  };
  setIterations(iterations);

  const unit = async (): Promise<number> => {
    const start = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(WORKGROUPS);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - start;
  };

  return {
    unit,
    async calibrate(targetMs) {
      for (let round = 0; round < 6; round++) {
        const samples = [await unit(), await unit(), await unit()].sort((a, b) => a - b);
        const ms = samples[1]!;
        if (Math.abs(ms - targetMs) < targetMs * 0.2) return;
        setIterations(iterations * Math.min(20, Math.max(0.05, targetMs / Math.max(ms, 0.05))));
      }
    },
    destroy() {
      data.destroy();
      params.destroy();
    },
  };
}

/** Runs units through a gate for `wallMs`; returns the GPU-busy share of the wall time. */
export async function pacedBusyFraction(
  work: GpuWork,
  gate: { waitUntilAllowed(): Promise<void>; afterWork(busyMs: number): Promise<void> },
  wallMs: number,
): Promise<{ fraction: number; units: number; busyMs: number; wallMs: number }> {
  const start = performance.now();
  let busyMs = 0;
  let units = 0;
  while (performance.now() - start < wallMs) {
    await gate.waitUntilAllowed();
    const busy = await work.unit();
    busyMs += busy;
    units++;
    await gate.afterWork(busy);
  }
  const elapsed = performance.now() - start;
  return { fraction: busyMs / elapsed, units, busyMs, wallMs: elapsed };
}
