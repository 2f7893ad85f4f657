import { DeviceWatch } from '../device/lost.js';
import type { AdamW } from '../kernels/adamw.js';
import type { ScaledOp } from '../kernels/crossentropy.js';
import type { EncodedOp, TensorRef } from '../kernels/types.js';
import {
  isFirstStage,
  validateConfig,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../model/config.js';
import { initStageParams, numel, stageParamCount, stageParamTensors } from '../model/params.js';
import {
  NonFiniteError,
  checkFinite,
  checkLength,
  checkNamedTensors,
  checkRange,
  checkShape,
  checkTokenIds,
} from '../stage/checks.js';
import type {
  AdamWSettings,
  NamedTensor,
  StageForwardResult,
  StageInput,
  StageState,
  StageTrainer,
} from '../stage/types.js';
import { Arena, type Slot } from './arena.js';
import { KernelSet } from './kernel-set.js';
import { PacedWait } from './paced-wait.js';
import { Readback } from './readback.js';
import { estimateStageMemoryBytes, planStage, type BlockSlots, type StageLayout } from './stage-layout.js';

export interface GpuStageOptions {
  /** Run seed: initial weights come from initStageParams(config, range, seed), as on the CPU. */
  seed: number;
  /** Kernels already compiled on this device (shared between stages); built when absent. */
  kernels?: KernelSet;
  /** Refuse to allocate more than this many bytes (a VRAM cap); checked before any allocation. */
  maxBytes?: number;
  /**
   * Ops over the stage's parameters that keep them in a constraint set (the subspace codec's projection,
   * gpu/codec): run after the initial upload, after every importState and after every optimizer step.
   */
  constrainParams?: (param: (name: string) => TensorRef) => EncodedOp[];
  /**
   * A boundary codec on the device (gpu/codec/device-boundary.ts), built on the stage's boundary buffers:
   * {@link GpuStage.forwardEncoded} and {@link GpuStage.backwardEncoded} then read back its encoding in place
   * of the activations and gradients.
   */
  boundary?: (buffers: BoundaryBuffers) => DeviceBoundary;
}

/** The buffers a stage's boundary tensors live in on the device. */
export interface BoundaryBuffers {
  /** The incoming activations (every stage but the first). */
  input: TensorRef | null;
  /** The outgoing activations (every stage but the last). */
  output: TensorRef | null;
  /** The output gradient going in, then the input gradient coming out (backward works in place). */
  grad: TensorRef;
  /** The token ids (the first stage). */
  tokens: TensorRef | null;
}

/** The ops of a device boundary codec around a stage's forward and backward. */
export interface DeviceBoundary {
  /** Fills `input` from the codec's own buffers, which the caller wrote. */
  decodeInput: EncodedOp[];
  /** Encodes `output`; `read` is what forward reads back. Null on the last stage. */
  encodeOutput: { ops: EncodedOp[]; read: TensorRef } | null;
  /** Fills `grad` from the codec's own buffers. */
  decodeGrad: EncodedOp[];
  /** Encodes the input gradient; null on the first stage. */
  encodeInputGrad: { ops: EncodedOp[]; read: TensorRef } | null;
}

/** Without a VRAM cap a stage stashes as many micro-batches as 1F1B asks for, up to this many. */
const UNCAPPED_STASHES = 64;

/** The ops of one stage, built once for its shape and replayed every micro-batch. */
interface Program {
  forward: EncodedOp[];
  backward: EncodedOp[];
  lossBackward: ScaledOp | null;
  norm: EncodedOp;
  adamw: EncodedOp[];
}

/**
 * A pipeline stage training on WebGPU, with the maths of the CPU reference (gpu/reference/cpu-stage.ts).
 * Every buffer is allocated once in {@link GpuStage.create}; a step only records launches of prebuilt ops and
 * writes inputs with queue.writeBuffer. NaN or Inf in the loss, the gradients, the outgoing activations or the
 * input gradient throws a {@link NonFiniteError}; a lost device throws a DeviceLostError (gpu/device/lost.ts),
 * after which the host builds a new stage on a new device and imports the last exported state.
 */
export class GpuStage implements StageTrainer {
  readonly paramCount: number;
  private readonly arena: Arena;
  private readonly program: Program;
  private readonly adam: AdamW;
  private readonly readback: Readback;
  private readonly small: Readback;
  private readonly watch: DeviceWatch;
  private readonly pace = new PacedWait();
  private stepCount = 0;
  private constrain: EncodedOp[] = [];
  private boundary: DeviceBoundary | null = null;
  private hasForward = false;
  private tail: Promise<unknown> = Promise.resolve();
  /** 1F1B: copies of the activation and input buffers of micro-batches between forward and backward, by id. */
  private readonly stashes = new Map<number, GPUBuffer[]>();
  private readonly spareStashes: GPUBuffer[][] = [];
  stashCapacity = 1;

  private constructor(
    readonly device: GPUDevice,
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    private readonly layout: StageLayout,
    kernels: KernelSet,
  ) {
    this.paramCount = stageParamCount(config, range);
    this.watch = new DeviceWatch(device);
    this.arena = new Arena(device, layout.plan, `stage ${range.index}`);
    this.adam = kernels.adamw();
    this.program = buildProgram(kernels, this.adam, layout, config, range, shape, (slot) =>
      this.arena.ref(slot),
    );
    this.readback = new Readback(device, this.watch, layout.stagingBytes, `stage ${range.index}`, this.pace);
    this.small = new Readback(device, this.watch, 256, `stage ${range.index} scalars`, this.pace);
  }

  /** Checks the shapes and the memory cap, allocates everything and uploads the seeded initial weights. */
  static async create(
    device: GPUDevice,
    config: GptConfig,
    range: StageRange,
    shape: MicroBatchShape,
    options: GpuStageOptions,
  ): Promise<GpuStage> {
    validateConfig(config);
    checkRange(config, range);
    checkShape(config, shape);
    const limits = {
      maxBufferSize: device.limits.maxBufferSize,
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
    };
    const kernels = options.kernels ?? new KernelSet(device);
    const needed = estimateStageMemoryBytes(config, range, shape, limits, kernels.attentionKind);
    if (options.maxBytes !== undefined && needed > options.maxBytes) {
      throw new Error(
        `stage ${range.index + 1} of ${range.count} needs ${mib(needed)} of GPU memory, over the ${mib(options.maxBytes)} cap`,
      );
    }
    const layout = planStage(config, range, shape, limits, kernels.attentionKind);
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let stage: GpuStage | null = null;
    try {
      stage = new GpuStage(device, config, range, shape, layout, kernels);
    } finally {
      const validation = await device.popErrorScope();
      const oom = await device.popErrorScope();
      if (validation || oom) {
        stage?.destroy();
        throw new Error(
          `could not build stage ${range.index} on this device: ${(oom ?? validation)!.message}`,
        );
      }
    }
    // Each stash copies the activation and input buffers; the cap leaves room for as many as fit.
    const stashBytes = stage.stashSources().reduce((n, b) => n + b.size, 0);
    stage.stashCapacity =
      options.maxBytes === undefined
        ? UNCAPPED_STASHES
        : Math.max(1, Math.floor((options.maxBytes - needed) / stashBytes));
    stage.writeParams('params', initStageParams(config, range, options.seed));
    stage.constrain = options.constrainParams?.((name) => stage.paramRef(name)) ?? [];
    stage.boundary =
      options.boundary?.({
        input: isFirstStage(range) ? null : stage.ref(layout.x0),
        output: layout.head ? null : stage.ref(layout.blocks.at(-1)?.res3 ?? layout.x0),
        grad: stage.ref(layout.scratch.dres),
        tokens: layout.tokens ? stage.ref(layout.tokens) : null,
      }) ?? null;
    await stage.runAndWait('constrain', (enc) => record(enc, stage.constrain));
    return stage;
  }

  forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    return this.exclusive(async () => {
      if (isFirstStage(this.range)) {
        if (input.kind !== 'tokens') throw new Error('the first stage takes tokens, got activations');
        this.writeTokens(input.tokens);
      } else {
        if (input.kind !== 'activations')
          throw new Error(`stage ${this.range.index} takes activations, got tokens`);
        const { batch: B, seq: T } = this.shape;
        checkLength('activations', input.data, B * T * this.config.width, 'batch*seq*width');
        this.write(this.layout.x0, input.data);
      }
      return this.runForward(targets, [], null);
    });
  }

  /**
   * forward() through the device boundary: the input is decoded on the device from the codec's buffers (which
   * the caller wrote), or is `tokens` on the first stage; a stage that is not the last returns the encoding
   * that the codec's `read` buffer holds, not the activations.
   */
  forwardEncoded(tokens: Int32Array | null, targets?: Int32Array): Promise<StageForwardResult> {
    return this.exclusive(async () => {
      const boundary = this.needBoundary();
      if (isFirstStage(this.range)) {
        if (!tokens) throw new Error('the first stage takes tokens');
        this.writeTokens(tokens);
      }
      return this.runForward(
        targets,
        isFirstStage(this.range) ? [] : boundary.decodeInput,
        boundary.encodeOutput,
      );
    });
  }

  private writeTokens(tokens: Int32Array): void {
    const { batch: B, seq: T } = this.shape;
    checkTokenIds('tokens', tokens, B * T, this.config.vocabSize);
    this.write(this.layout.tokens!, tokens);
  }

  private needBoundary(): DeviceBoundary {
    if (!this.boundary) throw new Error('this stage has no device boundary codec');
    return this.boundary;
  }

  private async runForward(
    targets: Int32Array | undefined,
    prelude: EncodedOp[],
    encode: { ops: EncodedOp[]; read: TensorRef } | null,
  ): Promise<StageForwardResult> {
    const { batch: B, seq: T } = this.shape;
    const head = this.layout.head;
    if (head) {
      if (targets === undefined) throw new Error('the last stage needs targets');
      checkTokenIds('targets', targets, B * T, this.config.vocabSize);
      this.write(head.targets, targets);
    }
    this.hasForward = false;
    const out = head ? this.layout.lossResult : (this.layout.blocks.at(-1)?.res3 ?? this.layout.x0);
    const reader = head ? this.small : this.readback;
    const ops = [...prelude, ...this.program.forward, ...(head ? [] : (encode?.ops ?? []))];
    const read = !head && encode ? encode.read : this.ref(out);
    const data = await reader.read([read], (enc) => record(enc, ops), 'forward');
    this.hasForward = true;
    if (!head) {
      checkFinite(`stage ${this.range.index} output ${encode ? 'encoding' : 'activations'}`, data);
      return { kind: 'activations', data };
    }
    const [loss, flag] = scalarWithFlag(data);
    if (flag !== 0 || !Number.isFinite(loss))
      throw new NonFiniteError(`the loss of stage ${this.range.index} is ${loss}`);
    return { kind: 'loss', loss };
  }

  backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null> {
    return this.exclusive(async () => {
      if (!this.program.lossBackward) {
        if (gradOut === null) throw new Error(`stage ${this.range.index} needs the gradient of its output`);
        const { batch: B, seq: T } = this.shape;
        checkLength('gradOut', gradOut, B * T * this.config.width, 'batch*seq*width');
        this.write(this.layout.scratch.dres, gradOut);
      } else if (gradOut !== null)
        throw new Error('the last stage differentiates its loss: pass gradOut = null');
      return this.runBackward(lossScale, [], null);
    });
  }

  /**
   * backward() through the device boundary: the output gradient is decoded on the device from the codec's
   * buffers (every stage but the last), and the input gradient is returned encoded (every stage but the first).
   */
  backwardEncoded(lossScale: number): Promise<Float32Array | null> {
    return this.exclusive(async () => {
      const boundary = this.needBoundary();
      return this.runBackward(
        lossScale,
        this.program.lossBackward ? [] : boundary.decodeGrad,
        boundary.encodeInputGrad,
      );
    });
  }

  private async runBackward(
    lossScale: number,
    prelude: EncodedOp[],
    encode: { ops: EncodedOp[]; read: TensorRef } | null,
  ): Promise<Float32Array | null> {
    if (!this.hasForward) throw new Error('backward() needs a forward() first');
    if (this.program.lossBackward) {
      if (!Number.isFinite(lossScale)) throw new Error(`lossScale must be finite, got ${lossScale}`);
      this.program.lossBackward.setScale(lossScale / (this.shape.batch * this.shape.seq));
    }
    const first = isFirstStage(this.range);
    const ops = [...prelude, ...this.program.backward, ...(first ? [] : (encode?.ops ?? []))];
    const record_ = (enc: GPUCommandEncoder): void => record(enc, ops);
    if (first) {
      await this.runAndWait('backward', record_);
      return null;
    }
    const read = encode ? encode.read : this.ref(this.layout.scratch.dres);
    const dinput = await this.readback.read([read], record_, 'backward');
    checkFinite(`stage ${this.range.index} input gradient${encode ? ' encoding' : ''}`, dinput);
    return dinput;
  }

  stash(id: number): Promise<void> {
    return this.exclusive(async () => {
      if (!this.hasForward) throw new Error('stash() needs a forward() first');
      if (this.stashes.size >= this.stashCapacity)
        throw new Error(`stash ${id}: already holding ${this.stashes.size} of ${this.stashCapacity}`);
      const sources = this.stashSources();
      const copies =
        this.spareStashes.pop() ??
        sources.map((b) =>
          this.device.createBuffer({
            label: `stage ${this.range.index} stash`,
            size: b.size,
            usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          }),
        );
      this.copyBuffers(sources, copies);
      this.stashes.set(id, copies);
      this.hasForward = false;
    });
  }

  restore(id: number): Promise<void> {
    return this.exclusive(async () => {
      const copies = this.stashes.get(id);
      if (!copies) throw new Error(`no activations stashed under ${id}`);
      this.copyBuffers(copies, this.stashSources());
      this.stashes.delete(id);
      this.spareStashes.push(copies);
      this.hasForward = true;
    });
  }

  /** What a micro-batch leaves for its backward: every activation buffer and the inputs (tokens, targets). */
  private stashSources(): GPUBuffer[] {
    return this.arena.buffersOf(['acts', 'io']);
  }

  /** Queue-ordered copies: after the forward that filled them, before any later write. */
  private copyBuffers(from: readonly GPUBuffer[], to: readonly GPUBuffer[]): void {
    const encoder = this.device.createCommandEncoder();
    from.forEach((b, i) => encoder.copyBufferToBuffer(b, 0, to[i]!, 0, b.size));
    this.device.queue.submit([encoder.finish()]);
  }

  zeroGrad(): void {
    for (const copies of this.stashes.values()) this.spareStashes.push(copies);
    this.stashes.clear();
    this.watch.check();
    const encoder = this.device.createCommandEncoder();
    for (const slot of this.layout.grads) {
      const r = this.ref(slot);
      encoder.clearBuffer(r.buffer, r.offset, alignTo4(r.size));
    }
    this.device.queue.submit([encoder.finish()]);
  }

  gradSquaredNorm(): Promise<number> {
    return this.exclusive(async () => {
      const data = await this.small.read(
        [this.ref(this.layout.normResult)],
        (enc) => record(enc, [this.program.norm]),
        'norm',
      );
      const [value, flag] = scalarWithFlag(data);
      if (flag !== 0 || !Number.isFinite(value))
        throw new NonFiniteError(`the gradients of stage ${this.range.index} hold NaN or Inf`);
      return value;
    });
  }

  exportGrads(): Promise<Float32Array> {
    return this.exclusive(() => this.readback.read(this.layout.grads.map((s) => this.ref(s))));
  }

  importGrads(grads: Float32Array): Promise<void> {
    return this.exclusive(async () => {
      checkLength('gradient vector', grads, this.paramCount, 'the stage parameter count');
      let offset = 0;
      this.writeParams(
        'grads',
        this.layout.specs.map((s) => {
          const n = numel(s.shape);
          offset += n;
          return grads.subarray(offset - n, offset);
        }),
      );
      await this.watch.guard(this.device.queue.onSubmittedWorkDone());
    });
  }

  step(settings: AdamWSettings, clipScale: number): Promise<void> {
    return this.exclusive(async () => {
      if (!Number.isFinite(clipScale)) throw new Error(`clipScale must be finite, got ${clipScale}`);
      this.adam.setStep(settings, this.stepCount + 1, clipScale);
      await this.runAndWait('adamw', (enc) => record(enc, [...this.program.adamw, ...this.constrain]));
      this.stepCount++;
    });
  }

  exportState(): Promise<StageState> {
    return this.exclusive(async () => {
      const named = async (slots: Slot[]): Promise<NamedTensor[]> => {
        const flat = await this.readback.read(slots.map((s) => this.ref(s)));
        let offset = 0;
        return this.layout.specs.map((spec) => {
          const n = numel(spec.shape);
          offset += n;
          return { name: spec.name, shape: [...spec.shape], data: flat.slice(offset - n, offset) };
        });
      };
      return {
        step: this.stepCount,
        params: await named(this.layout.params),
        m: await named(this.layout.m),
        v: await named(this.layout.v),
      };
    });
  }

  importState(state: StageState): Promise<void> {
    return this.exclusive(async () => {
      if (!Number.isInteger(state.step) || state.step < 0)
        throw new Error(`state.step must be a non-negative integer, got ${state.step}`);
      checkNamedTensors('params', state.params, this.layout.specs);
      checkNamedTensors('m', state.m, this.layout.specs);
      checkNamedTensors('v', state.v, this.layout.specs);
      this.writeParams(
        'params',
        state.params.map((t) => t.data),
      );
      this.writeParams(
        'm',
        state.m.map((t) => t.data),
      );
      this.writeParams(
        'v',
        state.v.map((t) => t.data),
      );
      await this.runAndWait('constrain', (enc) => record(enc, this.constrain));
      this.stepCount = state.step;
    });
  }

  /** True once the device is known lost; the stage is then unusable and must be rebuilt. */
  get deviceLost(): boolean {
    return this.watch.isLost;
  }

  destroy(): void {
    for (const copies of [...this.stashes.values(), ...this.spareStashes])
      for (const b of copies) b.destroy();
    this.arena.destroy();
    this.readback.destroy();
    this.small.destroy();
  }

  /** Runs GPU work one call at a time: calls share the staging buffers. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(() => {
      this.watch.check();
      return work();
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Submits the recorded work and waits until the queue has run it. */
  private async runAndWait(paceKey: string, work: (encoder: GPUCommandEncoder) => void): Promise<void> {
    const submitted = performance.now();
    await this.readback.read([], work);
    await this.pace.wait(paceKey, submitted, () => this.watch.guard(this.device.queue.onSubmittedWorkDone()));
  }

  private paramRef(name: string): TensorRef {
    const i = this.layout.specs.findIndex((s) => s.name === name);
    if (i < 0) throw new Error(`stage ${this.range.index} has no parameter ${name}`);
    return this.ref(this.layout.params[i]!);
  }

  private ref(slot: Slot): TensorRef {
    return this.arena.ref(slot);
  }

  private write(slot: Slot, data: Float32Array | Int32Array): void {
    const r = this.ref(slot);
    this.device.queue.writeBuffer(r.buffer, r.offset, data.buffer, data.byteOffset, data.byteLength);
  }

  private writeParams(role: 'params' | 'grads' | 'm' | 'v', tensors: readonly Float32Array[]): void {
    this.watch.check();
    this.layout[role].forEach((slot, i) => this.write(slot, tensors[i]!));
  }
}

function alignTo4(bytes: number): number {
  return Math.ceil(bytes / 4) * 4;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** A reduction result: the f32 value and the nonfinite flag. */
function scalarWithFlag(data: Float32Array): [number, number] {
  return [data[0]!, new Uint32Array(data.buffer, data.byteOffset, 2)[1]!];
}

function record(encoder: GPUCommandEncoder, ops: readonly EncodedOp[]): void {
  const pass = encoder.beginComputePass();
  for (const op of ops) op.encode(pass);
  pass.end();
}

/** Builds every launch of the stage once: forward, backward (llm.c's order), the gradient norm and AdamW. */
function buildProgram(
  k: KernelSet,
  adam: AdamW,
  layout: StageLayout,
  config: GptConfig,
  range: StageRange,
  shape: MicroBatchShape,
  ref: (slot: Slot) => TensorRef,
): Program {
  const { batch: B, seq: T } = shape;
  const { width: C, heads: NH, vocabSize: V } = config;
  const H = config.mlpRatio * C;
  const BT = B * T;
  const P = stageParamTensors(range, layout.params.map(ref));
  const G = stageParamTensors(range, layout.grads.map(ref));
  const s = layout.scratch;
  const zero = (slot: Slot, n: number): EncodedOp => k.elementwise.zero({ out: ref(slot), n });
  const dims = (inDim: number, outDim: number) => ({ rows: BT, inDim, outDim });

  const forward: EncodedOp[] = [];
  const backward: EncodedOp[] = [];
  if (layout.tokens && P.embed) {
    forward.push(
      k.encoder.forward({
        out: ref(layout.x0),
        tokens: ref(layout.tokens),
        wte: P.embed.wte,
        wpe: P.embed.wpe,
        dims: { B, T, C, vocab: V },
      }),
    );
  }
  // A block's closing residual add (res3 = res2 + fcproj) runs inside the LayerNorm that reads res3 next:
  // the next block's ln1 or the head's lnf (llm.c's fused residual + LayerNorm).
  const closingResidual = (a: BlockSlots | undefined) =>
    a ? { a: ref(a.res2), b: ref(a.fcproj) } : undefined;
  const blockOps = layout.blocks.map((a: BlockSlots, i) => {
    const w = P.blocks[i]!;
    const g = G.blocks[i]!;
    const fwd: EncodedOp[] = [
      k.layernorm.forward({
        out: ref(a.ln1),
        mean: ref(a.ln1Mean),
        rstd: ref(a.ln1Rstd),
        inp: ref(a.input),
        weight: w.ln1w,
        bias: w.ln1b,
        rows: BT,
        C,
        residual: closingResidual(layout.blocks[i - 1]),
      }),
      k.matmul.forward({
        out: ref(a.qkv),
        inp: ref(a.ln1),
        weight: w.qkvw,
        bias: w.qkvb,
        dims: dims(C, 3 * C),
      }),
      layout.attention === 'flash'
        ? k.flashAttention.forward({
            out: ref(a.atty),
            lse: ref(a.att),
            qkv: ref(a.qkv),
            dims: { B, T, C, NH },
          })
        : k.attention.forward({ out: ref(a.atty), att: ref(a.att), qkv: ref(a.qkv), dims: { B, T, C, NH } }),
      k.matmul.forward({
        out: ref(a.attproj),
        inp: ref(a.atty),
        weight: w.attprojw,
        bias: w.attprojb,
        dims: dims(C, C),
      }),
      k.layernorm.forward({
        out: ref(a.ln2),
        mean: ref(a.ln2Mean),
        rstd: ref(a.ln2Rstd),
        inp: ref(a.res2),
        weight: w.ln2w,
        bias: w.ln2b,
        rows: BT,
        C,
        residual: { a: ref(a.input), b: ref(a.attproj) },
      }),
      k.matmul.forward({
        out: ref(a.fch),
        inp: ref(a.ln2),
        weight: w.fcw,
        bias: w.fcb,
        dims: dims(C, H),
        gelu: ref(a.fchGelu),
      }),
      k.matmul.forward({
        out: ref(a.fcproj),
        inp: ref(a.fchGelu),
        weight: w.fcprojw,
        bias: w.fcprojb,
        dims: dims(H, C),
      }),
    ];
    if (i === layout.blocks.length - 1 && !layout.head)
      fwd.push(k.elementwise.residual({ out: ref(a.res3), a: ref(a.res2), b: ref(a.fcproj), n: BT * C }));
    // dres holds the gradient of res3; the residual adds pass it unchanged to res2 and to the block input,
    // so both layernorm backwards accumulate into it in place.
    const dres = ref(s.dres);
    const bwd: EncodedOp[] = [
      k.matmul.backwardInput({
        dinp: ref(s.dfch),
        dout: dres,
        weight: w.fcprojw,
        dims: dims(H, C),
        overwrite: true,
        geluInput: ref(a.fch),
      }),
      k.matmul.backwardWeight({
        dweight: g.fcprojw,
        dbias: g.fcprojb,
        dout: dres,
        inp: ref(a.fchGelu),
        dims: dims(H, C),
      }),
      k.matmul.backwardInput({
        dinp: ref(s.dln),
        dout: ref(s.dfch),
        weight: w.fcw,
        dims: dims(C, H),
        overwrite: true,
      }),
      k.matmul.backwardWeight({
        dweight: g.fcw,
        dbias: g.fcb,
        dout: ref(s.dfch),
        inp: ref(a.ln2),
        dims: dims(C, H),
      }),
      k.layernorm.backward({
        dinp: dres,
        dweight: g.ln2w,
        dbias: g.ln2b,
        dout: ref(s.dln),
        inp: ref(a.res2),
        weight: w.ln2w,
        mean: ref(a.ln2Mean),
        rstd: ref(a.ln2Rstd),
        rows: BT,
        C,
      }),
      k.matmul.backwardInput({
        dinp: ref(s.datty),
        dout: dres,
        weight: w.attprojw,
        dims: dims(C, C),
        overwrite: true,
      }),
      k.matmul.backwardWeight({
        dweight: g.attprojw,
        dbias: g.attprojb,
        dout: dres,
        inp: ref(a.atty),
        dims: dims(C, C),
      }),
      zero(s.dqkv, BT * 3 * C),
      layout.attention === 'flash'
        ? k.flashAttention.backward({
            dqkv: ref(s.dqkv),
            delta: ref(s.dpreatt),
            dout: ref(s.datty),
            out: ref(a.atty),
            qkv: ref(a.qkv),
            lse: ref(a.att),
            dims: { B, T, C, NH },
          })
        : k.attention.backward({
            dqkv: ref(s.dqkv),
            dpreatt: ref(s.dpreatt),
            dout: ref(s.datty),
            qkv: ref(a.qkv),
            att: ref(a.att),
            dims: { B, T, C, NH },
          }),
      k.matmul.backwardInput({
        dinp: ref(s.dln),
        dout: ref(s.dqkv),
        weight: w.qkvw,
        dims: dims(C, 3 * C),
        overwrite: true,
      }),
      k.matmul.backwardWeight({
        dweight: g.qkvw,
        dbias: g.qkvb,
        dout: ref(s.dqkv),
        inp: ref(a.ln1),
        dims: dims(C, 3 * C),
      }),
      k.layernorm.backward({
        dinp: dres,
        dweight: g.ln1w,
        dbias: g.ln1b,
        dout: ref(s.dln),
        inp: ref(a.input),
        weight: w.ln1w,
        mean: ref(a.ln1Mean),
        rstd: ref(a.ln1Rstd),
        rows: BT,
        C,
      }),
    ];
    return { fwd, bwd };
  });
  for (const b of blockOps) forward.push(...b.fwd);

  let lossBackward: ScaledOp | null = null;
  const h = layout.head;
  if (h && P.head && G.head) {
    const x = ref(layout.blocks.at(-1)?.res3 ?? layout.x0);
    forward.push(
      k.layernorm.forward({
        out: ref(h.lnf),
        mean: ref(h.lnfMean),
        rstd: ref(h.lnfRstd),
        inp: x,
        weight: P.head.lnfw,
        bias: P.head.lnfb,
        rows: BT,
        C,
        residual: closingResidual(layout.blocks.at(-1)),
      }),
      k.matmul.forward({
        out: ref(h.logits),
        inp: ref(h.lnf),
        weight: P.head.headw,
        bias: null,
        dims: dims(C, V),
      }),
      k.crossentropy.forward({
        probs: ref(h.probs),
        losses: ref(h.losses),
        logits: ref(h.logits),
        targets: ref(h.targets),
        rows: BT,
        V,
      }),
      k.reduce.sum({
        result: ref(layout.lossResult),
        partials: ref(layout.partials),
        flags: ref(layout.flags),
        inputs: [{ ref: ref(h.losses), n: BT }],
        square: false,
        scale: 1 / BT,
      }),
    );
    lossBackward = k.crossentropy.backward({
      dlogits: ref(h.dlogits),
      probs: ref(h.probs),
      targets: ref(h.targets),
      rows: BT,
      V,
    });
    backward.push(
      zero(h.dlogits, BT * V),
      lossBackward,
      k.matmul.backwardInput({
        dinp: ref(s.dln),
        dout: ref(h.dlogits),
        weight: P.head.headw,
        dims: dims(C, V),
        overwrite: true,
      }),
      k.matmul.backwardWeight({
        dweight: G.head.headw,
        dbias: null,
        dout: ref(h.dlogits),
        inp: ref(h.lnf),
        dims: dims(C, V),
      }),
      zero(s.dres, BT * C),
      k.layernorm.backward({
        dinp: ref(s.dres),
        dweight: G.head.lnfw,
        dbias: G.head.lnfb,
        dout: ref(s.dln),
        inp: x,
        weight: P.head.lnfw,
        mean: ref(h.lnfMean),
        rstd: ref(h.lnfRstd),
        rows: BT,
        C,
      }),
    );
  }
  for (let i = blockOps.length - 1; i >= 0; i--) backward.push(...blockOps[i]!.bwd);
  if (layout.tokens && G.embed) {
    backward.push(
      k.encoder.backward({
        dwte: G.embed.wte,
        dwpe: G.embed.wpe,
        dout: ref(s.dres),
        tokens: ref(layout.tokens),
        dims: { B, T, C, vocab: V },
      }),
    );
  }
  const sizes = layout.specs.map((sp) => numel(sp.shape));
  const norm = k.reduce.sum({
    result: ref(layout.normResult),
    partials: ref(layout.partials),
    flags: ref(layout.flags),
    inputs: layout.grads.map((g, i) => ({ ref: ref(g), n: sizes[i]! })),
    square: true,
    scale: 1,
  });
  const adamw = adam.updateAll(
    layout.specs.map((sp, i) => ({
      param: ref(layout.params[i]!),
      grad: ref(layout.grads[i]!),
      m: ref(layout.m[i]!),
      v: ref(layout.v[i]!),
      n: sizes[i]!,
      decay: sp.decay,
    })),
  );
  return { forward, backward, lossBackward, norm, adamw };
}
