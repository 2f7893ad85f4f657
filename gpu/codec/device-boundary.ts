import type { CodecName } from '../../shared/protocol/codec.js';
import { checkSubspaceIds, subspaceParts, type SubspaceBasis } from '../../shared/protocol/codec-subspace.js';
import type { BoundaryBuffers, DeviceBoundary, GpuStage } from '../engine/gpu-stage.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../model/config.js';
import type { TensorRef } from '../kernels/types.js';
import type { StageForwardResult, StageTrainer } from '../stage/types.js';
import { SubspaceKernels } from './subspace-kernels.js';

/** A boundary tensor as it travels: the first stage's token ids, or a codec's payload. */
export type EncodedInput = { kind: 'tokens'; tokens: Int32Array } | { kind: 'payload'; payload: Uint8Array };

export type EncodedForwardResult = { kind: 'payload'; payload: Uint8Array } | { kind: 'loss'; loss: number };

/**
 * A stage that encodes and decodes its own boundary tensors, on the device, in the run's codec: the node hands
 * it the payloads that arrive and sends the ones it returns, and never holds a decoded tensor.
 */
export interface EncodingStage extends StageTrainer {
  readonly boundaryCodec: CodecName;
  forwardEncoded(input: EncodedInput, targets?: Int32Array): Promise<EncodedForwardResult>;
  /** `gradOut`: the output gradient's payload (null on the last stage); returns the input gradient's (null on the first). */
  backwardEncoded(gradOut: Uint8Array | null, lossScale: number): Promise<Uint8Array | null>;
}

export function isEncodingStage(stage: StageTrainer): stage is EncodingStage {
  return typeof (stage as Partial<EncodingStage>).boundaryCodec === 'string';
}

/**
 * The subspace codec on a GPU stage's own buffers (the kernels of subspace-kernels.ts): an arriving payload's
 * coefficients and ids are written to the codec's buffers and decoded on the device into the stage input or
 * output gradient; what leaves is encoded on the device, so only k floats a token are read back instead of
 * width. The payload layout is the CPU codec's (shared/protocol/codec-subspace.ts), so either end may be
 * either engine.
 */
export class SubspaceDeviceCodec {
  private readonly kernels: SubspaceKernels;
  private readonly rows: number;
  private readonly vocab: number;
  private readonly coeffsIn: TensorRef;
  private readonly ids: TensorRef;
  private readonly coeffsOut: TensorRef;
  private readonly buffers: GPUBuffer[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly basis: SubspaceBasis,
    private readonly shape: MicroBatchShape,
  ) {
    this.kernels = new SubspaceKernels(device, basis);
    this.rows = shape.batch * shape.seq;
    this.vocab = basis.fixedToken.length / basis.width;
    const K = basis.rank;
    this.coeffsIn = this.buffer('subspace coefficients in', this.rows * K);
    this.ids = this.buffer('subspace token ids in', this.rows);
    this.coeffsOut = this.buffer('subspace coefficients out', this.rows * K);
  }

  /** GpuStageOptions.boundary: the encode and decode launches on the stage's boundary buffers. */
  ops(b: BoundaryBuffers): DeviceBoundary {
    const rows = { rows: this.rows, seq: this.shape.seq };
    // Forward carries the fixed embedding parts: rebuilt from the ids that came in, or from the stage's tokens.
    const tokens = b.tokens ?? this.ids;
    return {
      decodeInput: b.input
        ? [this.kernels.decode({ ...rows, x: b.input, coeffs: this.coeffsIn, tokens: this.ids })]
        : [],
      encodeOutput: b.output
        ? {
            ops: [this.kernels.encode({ ...rows, coeffs: this.coeffsOut, x: b.output, tokens })],
            read: this.coeffsOut,
          }
        : null,
      decodeGrad: [this.kernels.decode({ ...rows, x: b.grad, coeffs: this.coeffsIn, tokens: null })],
      encodeInputGrad: b.input
        ? {
            ops: [this.kernels.encode({ ...rows, coeffs: this.coeffsOut, x: b.grad, tokens: null })],
            read: this.coeffsOut,
          }
        : null,
    };
  }

  /** Writes an arriving payload to the codec's buffers; returns a forward payload's token ids. */
  write(payload: Uint8Array, direction: 'forward' | 'backward'): Uint16Array | null {
    const bytes = this.rows * (4 * this.basis.rank + (direction === 'forward' ? 2 : 0));
    if (payload.byteLength !== bytes)
      throw new Error(
        `subspace ${direction} payload of ${payload.byteLength} bytes where ${bytes} were expected`,
      );
    const aligned = payload.byteOffset % 4 === 0 ? payload : payload.slice();
    const { coeffs, ids } = subspaceParts(aligned, this.rows, this.basis.rank, direction);
    this.upload(this.coeffsIn, coeffs);
    if (ids) {
      checkSubspaceIds(ids, this.vocab);
      this.upload(this.ids, Int32Array.from(ids));
    }
    return ids;
  }

  /** The payload of coefficients read back, with the token ids a forward one carries. */
  payload(coeffs: Float32Array, ids: ArrayLike<number> | null): Uint8Array {
    const out = new Uint8Array(this.rows * (4 * this.basis.rank + (ids ? 2 : 0)));
    const parts = subspaceParts(out, this.rows, this.basis.rank, ids ? 'forward' : 'backward');
    parts.coeffs.set(coeffs);
    parts.ids?.set(ids!);
    return out;
  }

  destroy(): void {
    this.kernels.destroy();
    for (const b of this.buffers) b.destroy();
  }

  private upload(ref: TensorRef, data: Float32Array | Int32Array): void {
    this.device.queue.writeBuffer(ref.buffer, ref.offset, data.buffer, data.byteOffset, data.byteLength);
  }

  private buffer(label: string, elements: number): TensorRef {
    const buffer = this.device.createBuffer({
      label,
      size: Math.max(16, elements * 4),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    this.buffers.push(buffer);
    return { buffer, offset: 0, size: buffer.size };
  }
}

/**
 * A GPU stage with the subspace codec on its boundary: {@link EncodingStage} through the device codec, and
 * StageTrainer's float interface as GpuStage has it. Calls run one at a time, since the codec's input buffers
 * are written before the stage's work is queued.
 */
export class SubspaceGpuStage implements EncodingStage {
  readonly boundaryCodec = 'subspace';
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly inner: GpuStage,
    private readonly codec: SubspaceDeviceCodec,
  ) {}

  get config(): GptConfig {
    return this.inner.config;
  }
  get range(): StageRange {
    return this.inner.range;
  }
  get shape(): MicroBatchShape {
    return this.inner.shape;
  }
  get paramCount(): number {
    return this.inner.paramCount;
  }
  get stashCapacity(): number {
    return this.inner.stashCapacity;
  }

  forwardEncoded(input: EncodedInput, targets?: Int32Array): Promise<EncodedForwardResult> {
    return this.exclusive(async () => {
      const ids = input.kind === 'tokens' ? input.tokens : this.codec.write(input.payload, 'forward');
      const result = await this.inner.forwardEncoded(input.kind === 'tokens' ? input.tokens : null, targets);
      return result.kind === 'loss'
        ? result
        : { kind: 'payload', payload: this.codec.payload(result.data, ids) };
    });
  }

  backwardEncoded(gradOut: Uint8Array | null, lossScale: number): Promise<Uint8Array | null> {
    return this.exclusive(async () => {
      if (gradOut) this.codec.write(gradOut, 'backward');
      const coeffs = await this.inner.backwardEncoded(lossScale);
      return coeffs && this.codec.payload(coeffs, null);
    });
  }

  forward(...a: Parameters<StageTrainer['forward']>): Promise<StageForwardResult> {
    return this.exclusive(() => this.inner.forward(...a));
  }
  backward(...a: Parameters<StageTrainer['backward']>): ReturnType<StageTrainer['backward']> {
    return this.exclusive(() => this.inner.backward(...a));
  }
  stash(id: number): Promise<void> {
    return this.exclusive(() => this.inner.stash(id));
  }
  restore(id: number): Promise<void> {
    return this.exclusive(() => this.inner.restore(id));
  }
  zeroGrad(): void {
    this.inner.zeroGrad();
  }
  gradSquaredNorm(): Promise<number> {
    return this.inner.gradSquaredNorm();
  }
  exportGrads(): Promise<Float32Array> {
    return this.inner.exportGrads();
  }
  importGrads(grads: Float32Array): Promise<void> {
    return this.inner.importGrads(grads);
  }
  step(...a: Parameters<StageTrainer['step']>): Promise<void> {
    return this.inner.step(...a);
  }
  exportState(): ReturnType<StageTrainer['exportState']> {
    return this.inner.exportState();
  }
  importState(...a: Parameters<StageTrainer['importState']>): Promise<void> {
    return this.inner.importState(...a);
  }
  destroy(): void {
    this.inner.destroy();
    this.codec.destroy();
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
