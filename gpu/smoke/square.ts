import { adapterName, requestAdapter, summarizeAdapter } from '../device/acquire.js';

const shader = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < arrayLength(&data)) { data[id.x] = data[id.x] * data[id.x] + 1u; }
}`;

export interface SmokeResult {
  adapter: string;
  ok: boolean;
  /** First elements read back, for the failure message. */
  sample: number[];
}

/**
 * The smallest proof that a GPU path is real: squares n integers in a compute shader, reads them back
 * through a mapped buffer and checks every one.
 */
export async function runSquareSmoke(gpu: GPU, hint: string, n = 4096): Promise<SmokeResult> {
  const adapter = await requestAdapter(gpu, hint);
  const device = await adapter.requestDevice();
  try {
    const input = Uint32Array.from({ length: n }, (_, i) => i);
    const storage = device.createBuffer({
      size: input.byteLength,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(storage, 0, input);
    const readback = device.createBuffer({
      size: input.byteLength,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const pipeline = device.createComputePipeline({
      layout: 'auto',
      compute: { module: device.createShaderModule({ code: shader }), entryPoint: 'main' },
    });
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: storage } }],
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(Math.ceil(n / 64));
    pass.end();
    encoder.copyBufferToBuffer(storage, 0, readback, 0, input.byteLength);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const out = new Uint32Array(readback.getMappedRange().slice(0));
    readback.unmap();
    const ok = out.every((v, i) => v === (i * i + 1) >>> 0);
    return { adapter: adapterName(summarizeAdapter(adapter)), ok, sample: [...out.subarray(0, 8)] };
  } finally {
    device.destroy();
  }
}
