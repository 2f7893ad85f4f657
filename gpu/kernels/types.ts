/** A tensor's place on the GPU: a byte range of a buffer. Offsets are multiples of 256 (WebGPU's minimum). */
export interface TensorRef {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/**
 * One kernel launch with its buffers and uniforms bound at build time, so that recording a step allocates
 * nothing on the GPU.
 */
export interface EncodedOp {
  label: string;
  encode(pass: GPUComputePassEncoder): void;
}
