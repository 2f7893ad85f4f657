/**
 * A pipeline stage that trains on the CPU with the reference kernels: the numbers every GPU stage is held to,
 * and a trainer for machines without WebGPU. Follows llm.c's train_gpt2.c forward and backward, block by block.
 */
import {
  isFirstStage,
  isLastStage,
  validateConfig,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../model/config.js';
import {
  initStageParams,
  numel,
  stageParamCount,
  stageParams,
  stageParamTensors,
  type ParamSpec,
  type StageParamTensors,
} from '../model/params.js';
import {
  checkFinite,
  checkLength,
  checkNamedTensors,
  checkRange,
  checkShape,
  checkTokenIds,
  NonFiniteError,
} from '../stage/checks.js';
import type {
  AdamWSettings,
  NamedTensor,
  StageForwardResult,
  StageInput,
  StageState,
  StageTrainer,
} from '../stage/types.js';
import {
  adamwUpdate,
  attentionBackward,
  attentionForward,
  crossentropyForward,
  crossentropySoftmaxBackward,
  encoderBackward,
  encoderForward,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  matmulBackward,
  matmulForward,
  residualBackward,
  residualForward,
  softmaxForward,
  squaredNorm,
  type Floats,
} from './kernels.js';

export interface CpuStageOptions {
  /**
   * Storage of weights, moments, gradients and activations. 'f32' (the default) matches the GPU; 'f64' exists
   * so finite-difference tests can check whole-model gradients. Exported tensors are f32 either way, so
   * export/import round-trips bit-exactly only in 'f32'.
   */
  precision?: 'f32' | 'f64';
  /** Memory for micro-batch stashes (1F1B); sets `stashCapacity`. Default 1 GiB. */
  maxStashBytes?: number;
}

const CPU_STASH_BYTES = 2 ** 30;

/** f32 bytes one micro-batch's tape keeps on a stage (blocks' activations, the head's when it has one). */
function tapeBytes(config: GptConfig, range: StageRange, shape: MicroBatchShape): number {
  const BT = shape.batch * shape.seq;
  const { width: C, heads: NH, vocabSize: V } = config;
  const H = config.mlpRatio * C;
  const perBlock = BT * (11 * C + 4 + 2 * H) + 2 * BT * NH * shape.seq;
  const head = isLastStage(range) ? BT * (2 * C + 2 + V) : 0;
  return 4 * ((range.endBlock - range.firstBlock) * perBlock + head + BT);
}

/** The activations one block saves for its backward pass. */
interface BlockActs {
  input: Floats;
  ln1: Floats;
  ln1Mean: Floats;
  ln1Rstd: Floats;
  qkv: Floats;
  atty: Floats;
  preatt: Floats;
  att: Floats;
  attproj: Floats;
  res2: Floats;
  ln2: Floats;
  ln2Mean: Floats;
  ln2Rstd: Floats;
  fch: Floats;
  fchGelu: Floats;
  fcproj: Floats;
  res3: Floats;
}

interface HeadActs {
  input: Floats;
  lnf: Floats;
  lnfMean: Floats;
  lnfRstd: Floats;
  probs: Floats;
  targets: Int32Array;
}

interface Tape {
  tokens: Int32Array | null;
  blocks: BlockActs[];
  head: HeadActs | null;
}

export class CpuStage implements StageTrainer {
  readonly paramCount: number;
  private readonly specs: ParamSpec[];
  private readonly alloc: (n: number) => Floats;
  private params: Floats[];
  private grads: Floats[];
  private m: Floats[];
  private v: Floats[];
  private stepCount = 0;
  private tape: Tape | null = null;
  private readonly stashes = new Map<number, Tape>();
  readonly stashCapacity: number;

  constructor(
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    seed: number,
    options: CpuStageOptions = {},
  ) {
    validateConfig(config);
    checkRange(config, range);
    checkShape(config, shape);
    this.alloc = options.precision === 'f64' ? (n) => new Float64Array(n) : (n) => new Float32Array(n);
    this.specs = stageParams(config, range);
    this.paramCount = stageParamCount(config, range);
    this.params = initStageParams(config, range, seed).map((p) => this.copyIn(p));
    this.grads = this.specs.map((s) => this.alloc(numel(s.shape)));
    this.m = this.specs.map((s) => this.alloc(numel(s.shape)));
    this.v = this.specs.map((s) => this.alloc(numel(s.shape)));
    this.stashCapacity = Math.max(
      1,
      Math.floor((options.maxStashBytes ?? CPU_STASH_BYTES) / tapeBytes(config, range, shape)),
    );
  }

  async stash(id: number): Promise<void> {
    if (this.tape === null) throw new Error('stash() needs a forward() first');
    if (this.stashes.size >= this.stashCapacity)
      throw new Error(`stash ${id}: already holding ${this.stashes.size} of ${this.stashCapacity}`);
    this.stashes.set(id, this.tape);
    this.tape = null;
  }

  async restore(id: number): Promise<void> {
    const tape = this.stashes.get(id);
    if (!tape) throw new Error(`no activations stashed under ${id}`);
    this.stashes.delete(id);
    this.tape = tape;
  }

  async forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    const { batch: B, seq: T } = this.shape;
    const { width: C, vocabSize: V } = this.config;
    // A failed forward must not leave an older micro-batch for backward() to differentiate.
    this.tape = null;
    const first = isFirstStage(this.range);
    let x: Floats;
    let tokens: Int32Array | null = null;
    if (first) {
      if (input.kind !== 'tokens') throw new Error('the first stage takes tokens, got activations');
      checkTokenIds('tokens', input.tokens, B * T, V);
      tokens = Int32Array.from(input.tokens);
      x = this.alloc(B * T * C);
      const { wte, wpe } = this.weights().embed!;
      encoderForward(x, tokens, wte, wpe, B, T, C);
    } else {
      if (input.kind !== 'activations')
        throw new Error(`stage ${this.range.index} takes activations, got tokens`);
      checkLength('activations', input.data, B * T * C, 'batch*seq*width');
      x = this.copyIn(input.data);
    }
    const blocks: BlockActs[] = [];
    for (let l = this.range.firstBlock; l < this.range.endBlock; l++) {
      const acts = this.blockForward(l, x);
      blocks.push(acts);
      x = acts.res3;
    }
    if (!isLastStage(this.range)) {
      const data = Float32Array.from(x);
      checkFinite(`stage ${this.range.index} output activations`, data);
      this.tape = { tokens, blocks, head: null };
      return { kind: 'activations', data };
    }
    if (targets === undefined) throw new Error('the last stage needs targets');
    checkTokenIds('targets', targets, B * T, V);
    const head = this.headForward(x, Int32Array.from(targets));
    if (!Number.isFinite(head.loss))
      throw new NonFiniteError(`the loss of stage ${this.range.index} is ${head.loss}`);
    this.tape = { tokens, blocks, head: head.acts };
    return { kind: 'loss', loss: head.loss };
  }

  async backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null> {
    const tape = this.tape;
    if (tape === null) throw new Error('backward() needs a forward() first');
    const { batch: B, seq: T } = this.shape;
    const C = this.config.width;
    let dx: Floats;
    if (tape.head !== null) {
      if (gradOut !== null) throw new Error('the last stage differentiates its loss: pass gradOut = null');
      if (!Number.isFinite(lossScale)) throw new Error(`lossScale must be finite, got ${lossScale}`);
      dx = this.headBackward(tape.head, lossScale);
    } else {
      if (gradOut === null) throw new Error(`stage ${this.range.index} needs the gradient of its output`);
      checkLength('gradOut', gradOut, B * T * C, 'batch*seq*width');
      dx = this.copyIn(gradOut);
    }
    for (let i = tape.blocks.length - 1; i >= 0; i--)
      dx = this.blockBackward(this.range.firstBlock + i, tape.blocks[i]!, dx);
    if (tape.tokens !== null) {
      const { wte, wpe } = this.gradients().embed!;
      encoderBackward(wte, wpe, dx, tape.tokens, B, T, C);
      return null;
    }
    const dinput = Float32Array.from(dx);
    checkFinite(`stage ${this.range.index} input gradient`, dinput);
    return dinput;
  }

  zeroGrad(): void {
    this.stashes.clear();
    for (const g of this.grads) g.fill(0);
  }

  async gradSquaredNorm(): Promise<number> {
    const norm = this.grads.reduce((acc, g) => acc + squaredNorm(g), 0);
    if (!Number.isFinite(norm))
      throw new NonFiniteError(`the gradients of stage ${this.range.index} hold NaN or Inf`);
    return norm;
  }

  async exportGrads(): Promise<Float32Array> {
    const out = new Float32Array(this.paramCount);
    let offset = 0;
    for (const g of this.grads) {
      out.set(g, offset);
      offset += g.length;
    }
    return out;
  }

  async importGrads(grads: Float32Array): Promise<void> {
    checkLength('gradient vector', grads, this.paramCount, 'the stage parameter count');
    let offset = 0;
    for (const g of this.grads) {
      g.set(grads.subarray(offset, offset + g.length));
      offset += g.length;
    }
  }

  async step(settings: AdamWSettings, clipScale: number): Promise<void> {
    if (!Number.isFinite(clipScale)) throw new Error(`clipScale must be finite, got ${clipScale}`);
    this.stepCount++;
    this.specs.forEach((spec, i) => {
      adamwUpdate(
        this.params[i]!,
        this.grads[i]!,
        this.m[i]!,
        this.v[i]!,
        this.stepCount,
        settings,
        spec.decay,
        clipScale,
      );
    });
  }

  async exportState(): Promise<StageState> {
    const named = (tensors: Floats[]): NamedTensor[] =>
      this.specs.map((spec, i) => ({
        name: spec.name,
        shape: [...spec.shape],
        data: Float32Array.from(tensors[i]!),
      }));
    return { step: this.stepCount, params: named(this.params), m: named(this.m), v: named(this.v) };
  }

  async importState(state: StageState): Promise<void> {
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new Error(`state.step must be a non-negative integer, got ${state.step}`);
    checkNamedTensors('params', state.params, this.specs);
    checkNamedTensors('m', state.m, this.specs);
    checkNamedTensors('v', state.v, this.specs);
    this.params = state.params.map((t) => this.copyIn(t.data));
    this.m = state.m.map((t) => this.copyIn(t.data));
    this.v = state.v.map((t) => this.copyIn(t.data));
    this.stepCount = state.step;
  }

  destroy(): void {
    this.tape = null;
  }

  private blockForward(l: number, input: Floats): BlockActs {
    const { batch: B, seq: T } = this.shape;
    const { width: C, heads: NH } = this.config;
    const H = this.config.mlpRatio * C;
    const BTC = B * T * C;
    const w = this.weights().blocks[l - this.range.firstBlock]!;
    const a: BlockActs = {
      input,
      ln1: this.alloc(BTC),
      ln1Mean: this.alloc(B * T),
      ln1Rstd: this.alloc(B * T),
      qkv: this.alloc(3 * BTC),
      atty: this.alloc(BTC),
      preatt: this.alloc(B * NH * T * T),
      att: this.alloc(B * NH * T * T),
      attproj: this.alloc(BTC),
      res2: this.alloc(BTC),
      ln2: this.alloc(BTC),
      ln2Mean: this.alloc(B * T),
      ln2Rstd: this.alloc(B * T),
      fch: this.alloc(B * T * H),
      fchGelu: this.alloc(B * T * H),
      fcproj: this.alloc(BTC),
      res3: this.alloc(BTC),
    };
    layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, input, w.ln1w, w.ln1b, B, T, C);
    matmulForward(a.qkv, a.ln1, w.qkvw, w.qkvb, B, T, C, 3 * C);
    attentionForward(a.atty, a.preatt, a.att, a.qkv, B, T, C, NH);
    matmulForward(a.attproj, a.atty, w.attprojw, w.attprojb, B, T, C, C);
    residualForward(a.res2, input, a.attproj, BTC);
    layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.res2, w.ln2w, w.ln2b, B, T, C);
    matmulForward(a.fch, a.ln2, w.fcw, w.fcb, B, T, C, H);
    geluForward(a.fchGelu, a.fch, B * T * H);
    matmulForward(a.fcproj, a.fchGelu, w.fcprojw, w.fcprojb, B, T, H, C);
    residualForward(a.res3, a.res2, a.fcproj, BTC);
    return a;
  }

  /** Takes the gradient of the block's output (res3) and returns the gradient of its input. */
  private blockBackward(l: number, a: BlockActs, dres3: Floats): Floats {
    const { batch: B, seq: T } = this.shape;
    const { width: C, heads: NH } = this.config;
    const H = this.config.mlpRatio * C;
    const BTC = B * T * C;
    const w = this.weights().blocks[l - this.range.firstBlock]!;
    const g = this.gradients().blocks[l - this.range.firstBlock]!;
    const dres2 = this.alloc(BTC);
    const dfcproj = this.alloc(BTC);
    residualBackward(dres2, dfcproj, dres3, BTC);
    const dfchGelu = this.alloc(B * T * H);
    matmulBackward(dfchGelu, g.fcprojw, g.fcprojb, dfcproj, a.fchGelu, w.fcprojw, B, T, H, C);
    const dfch = this.alloc(B * T * H);
    geluBackward(dfch, a.fch, dfchGelu, B * T * H);
    const dln2 = this.alloc(BTC);
    matmulBackward(dln2, g.fcw, g.fcb, dfch, a.ln2, w.fcw, B, T, C, H);
    layernormBackward(dres2, g.ln2w, g.ln2b, dln2, a.res2, w.ln2w, a.ln2Mean, a.ln2Rstd, B, T, C);
    const dinput = this.alloc(BTC);
    const dattproj = this.alloc(BTC);
    residualBackward(dinput, dattproj, dres2, BTC);
    const datty = this.alloc(BTC);
    matmulBackward(datty, g.attprojw, g.attprojb, dattproj, a.atty, w.attprojw, B, T, C, C);
    const dqkv = this.alloc(3 * BTC);
    const scores = B * NH * T * T;
    attentionBackward(dqkv, this.alloc(scores), this.alloc(scores), datty, a.qkv, a.att, B, T, C, NH);
    const dln1 = this.alloc(BTC);
    matmulBackward(dln1, g.qkvw, g.qkvb, dqkv, a.ln1, w.qkvw, B, T, C, 3 * C);
    layernormBackward(dinput, g.ln1w, g.ln1b, dln1, a.input, w.ln1w, a.ln1Mean, a.ln1Rstd, B, T, C);
    return dinput;
  }

  private headForward(input: Floats, targets: Int32Array): { acts: HeadActs; loss: number } {
    const { batch: B, seq: T } = this.shape;
    const { width: C, vocabSize: V } = this.config;
    const acts: HeadActs = {
      input,
      lnf: this.alloc(B * T * C),
      lnfMean: this.alloc(B * T),
      lnfRstd: this.alloc(B * T),
      probs: this.alloc(B * T * V),
      targets,
    };
    const w = this.weights().head!;
    layernormForward(acts.lnf, acts.lnfMean, acts.lnfRstd, input, w.lnfw, w.lnfb, B, T, C);
    const logits = this.alloc(B * T * V);
    matmulForward(logits, acts.lnf, w.headw, null, B, T, C, V);
    softmaxForward(acts.probs, logits, B, T, V);
    const losses = this.alloc(B * T);
    crossentropyForward(losses, acts.probs, targets, B, T, V);
    let sum = 0;
    for (const l of losses) sum += l;
    return { acts, loss: sum / (B * T) };
  }

  /** Gradient of lossScale * mean loss w.r.t. the head's input. */
  private headBackward(acts: HeadActs, lossScale: number): Floats {
    const { batch: B, seq: T } = this.shape;
    const { width: C, vocabSize: V } = this.config;
    const w = this.weights().head!;
    const g = this.gradients().head!;
    const dlosses = this.alloc(B * T).fill(lossScale / (B * T));
    const dlogits = this.alloc(B * T * V);
    crossentropySoftmaxBackward(dlogits, dlosses, acts.probs, acts.targets, B, T, V);
    const dlnf = this.alloc(B * T * C);
    matmulBackward(dlnf, g.headw, null, dlogits, acts.lnf, w.headw, B, T, C, V);
    const dx = this.alloc(B * T * C);
    const { lnfMean, lnfRstd } = acts;
    layernormBackward(dx, g.lnfw, g.lnfb, dlnf, acts.input, w.lnfw, lnfMean, lnfRstd, B, T, C);
    return dx;
  }

  private weights(): StageParamTensors<Floats> {
    return stageParamTensors(this.range, this.params);
  }

  private gradients(): StageParamTensors<Floats> {
    return stageParamTensors(this.range, this.grads);
  }

  private copyIn(data: ArrayLike<number>): Floats {
    const out = this.alloc(data.length);
    out.set(data);
    return out;
  }
}
