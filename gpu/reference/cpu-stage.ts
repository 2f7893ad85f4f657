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
import { initStageParams, numel, stageParamCount, stageParams, type ParamSpec } from '../model/params.js';
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
  private readonly index = new Map<string, number>();
  private readonly alloc: (n: number) => Floats;
  private params: Floats[];
  private grads: Floats[];
  private m: Floats[];
  private v: Floats[];
  private stepCount = 0;
  private tape: Tape | null = null;

  constructor(
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    seed: number,
    options: CpuStageOptions = {},
  ) {
    validateConfig(config);
    validateRange(config, range);
    if (!Number.isInteger(shape.batch) || shape.batch < 1)
      throw new Error(`batch must be a positive integer, got ${shape.batch}`);
    if (!Number.isInteger(shape.seq) || shape.seq < 1 || shape.seq > config.contextLength) {
      throw new Error(`seq must be an integer in [1, ${config.contextLength}], got ${shape.seq}`);
    }
    this.alloc = options.precision === 'f64' ? (n) => new Float64Array(n) : (n) => new Float32Array(n);
    this.specs = stageParams(config, range);
    this.specs.forEach((spec, i) => this.index.set(spec.name, i));
    this.paramCount = stageParamCount(config, range);
    this.params = initStageParams(config, range, seed).map((p) => this.copyIn(p));
    this.grads = this.specs.map((s) => this.alloc(numel(s.shape)));
    this.m = this.specs.map((s) => this.alloc(numel(s.shape)));
    this.v = this.specs.map((s) => this.alloc(numel(s.shape)));
  }

  async forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    const { batch: B, seq: T } = this.shape;
    const { width: C, vocabSize: V } = this.config;
    const first = isFirstStage(this.range);
    let x: Floats;
    let tokens: Int32Array | null = null;
    if (first) {
      if (input.kind !== 'tokens') throw new Error('the first stage takes tokens, got activations');
      tokens = Int32Array.from(checkTokens('tokens', input.tokens, B * T, V));
      x = this.alloc(B * T * C);
      encoderForward(x, tokens, this.param('wte'), this.param('wpe'), B, T, C);
    } else {
      if (input.kind !== 'activations')
        throw new Error(`stage ${this.range.index} takes activations, got tokens`);
      if (input.data.length !== B * T * C) {
        throw new Error(
          `activations must have ${B * T * C} values (batch*seq*width), got ${input.data.length}`,
        );
      }
      x = this.copyIn(input.data);
    }
    const blocks: BlockActs[] = [];
    for (let l = this.range.firstBlock; l < this.range.endBlock; l++) {
      const acts = this.blockForward(l, x);
      blocks.push(acts);
      x = acts.res3;
    }
    if (!isLastStage(this.range)) {
      this.tape = { tokens, blocks, head: null };
      return { kind: 'activations', data: Float32Array.from(x) };
    }
    if (targets === undefined) throw new Error('the last stage needs targets');
    const head = this.headForward(x, Int32Array.from(checkTokens('targets', targets, B * T, V)));
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
      if (gradOut.length !== B * T * C) {
        throw new Error(`gradOut must have ${B * T * C} values (batch*seq*width), got ${gradOut.length}`);
      }
      dx = this.copyIn(gradOut);
    }
    for (let i = tape.blocks.length - 1; i >= 0; i--)
      dx = this.blockBackward(this.range.firstBlock + i, tape.blocks[i]!, dx);
    if (tape.tokens !== null) {
      encoderBackward(this.grad('wte'), this.grad('wpe'), dx, tape.tokens, B, T, C);
      return null;
    }
    return Float32Array.from(dx);
  }

  zeroGrad(): void {
    for (const g of this.grads) g.fill(0);
  }

  async gradSquaredNorm(): Promise<number> {
    return this.grads.reduce((acc, g) => acc + squaredNorm(g), 0);
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
    if (grads.length !== this.paramCount) {
      throw new Error(`gradient vector must have ${this.paramCount} values, got ${grads.length}`);
    }
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
    const params = this.readNamed('params', state.params);
    const m = this.readNamed('m', state.m);
    const v = this.readNamed('v', state.v);
    this.params = params;
    this.m = m;
    this.v = v;
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
    const p = (name: string): Floats => this.param(`blocks.${l}.${name}`);
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
    layernormForward(a.ln1, a.ln1Mean, a.ln1Rstd, input, p('ln1.w'), p('ln1.b'), B, T, C);
    matmulForward(a.qkv, a.ln1, p('attn.qkv.w'), p('attn.qkv.b'), B, T, C, 3 * C);
    attentionForward(a.atty, a.preatt, a.att, a.qkv, B, T, C, NH);
    matmulForward(a.attproj, a.atty, p('attn.proj.w'), p('attn.proj.b'), B, T, C, C);
    residualForward(a.res2, input, a.attproj, BTC);
    layernormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.res2, p('ln2.w'), p('ln2.b'), B, T, C);
    matmulForward(a.fch, a.ln2, p('mlp.fc.w'), p('mlp.fc.b'), B, T, C, H);
    geluForward(a.fchGelu, a.fch, B * T * H);
    matmulForward(a.fcproj, a.fchGelu, p('mlp.proj.w'), p('mlp.proj.b'), B, T, H, C);
    residualForward(a.res3, a.res2, a.fcproj, BTC);
    return a;
  }

  /** Takes the gradient of the block's output (res3) and returns the gradient of its input. */
  private blockBackward(l: number, a: BlockActs, dres3: Floats): Floats {
    const { batch: B, seq: T } = this.shape;
    const { width: C, heads: NH } = this.config;
    const H = this.config.mlpRatio * C;
    const BTC = B * T * C;
    const p = (name: string): Floats => this.param(`blocks.${l}.${name}`);
    const g = (name: string): Floats => this.grad(`blocks.${l}.${name}`);
    const dres2 = this.alloc(BTC);
    const dfcproj = this.alloc(BTC);
    residualBackward(dres2, dfcproj, dres3, BTC);
    const dfchGelu = this.alloc(B * T * H);
    matmulBackward(
      dfchGelu,
      g('mlp.proj.w'),
      g('mlp.proj.b'),
      dfcproj,
      a.fchGelu,
      p('mlp.proj.w'),
      B,
      T,
      H,
      C,
    );
    const dfch = this.alloc(B * T * H);
    geluBackward(dfch, a.fch, dfchGelu, B * T * H);
    const dln2 = this.alloc(BTC);
    matmulBackward(dln2, g('mlp.fc.w'), g('mlp.fc.b'), dfch, a.ln2, p('mlp.fc.w'), B, T, C, H);
    layernormBackward(dres2, g('ln2.w'), g('ln2.b'), dln2, a.res2, p('ln2.w'), a.ln2Mean, a.ln2Rstd, B, T, C);
    const dinput = this.alloc(BTC);
    const dattproj = this.alloc(BTC);
    residualBackward(dinput, dattproj, dres2, BTC);
    const datty = this.alloc(BTC);
    matmulBackward(datty, g('attn.proj.w'), g('attn.proj.b'), dattproj, a.atty, p('attn.proj.w'), B, T, C, C);
    const dqkv = this.alloc(3 * BTC);
    const scores = B * NH * T * T;
    attentionBackward(dqkv, this.alloc(scores), this.alloc(scores), datty, a.qkv, a.att, B, T, C, NH);
    const dln1 = this.alloc(BTC);
    matmulBackward(dln1, g('attn.qkv.w'), g('attn.qkv.b'), dqkv, a.ln1, p('attn.qkv.w'), B, T, C, 3 * C);
    layernormBackward(
      dinput,
      g('ln1.w'),
      g('ln1.b'),
      dln1,
      a.input,
      p('ln1.w'),
      a.ln1Mean,
      a.ln1Rstd,
      B,
      T,
      C,
    );
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
    layernormForward(
      acts.lnf,
      acts.lnfMean,
      acts.lnfRstd,
      input,
      this.param('lnf.w'),
      this.param('lnf.b'),
      B,
      T,
      C,
    );
    const logits = this.alloc(B * T * V);
    matmulForward(logits, acts.lnf, this.param('head.w'), null, B, T, C, V);
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
    const dlosses = this.alloc(B * T).fill(lossScale / (B * T));
    const dlogits = this.alloc(B * T * V);
    crossentropySoftmaxBackward(dlogits, dlosses, acts.probs, acts.targets, B, T, V);
    const dlnf = this.alloc(B * T * C);
    matmulBackward(dlnf, this.grad('head.w'), null, dlogits, acts.lnf, this.param('head.w'), B, T, C, V);
    const dx = this.alloc(B * T * C);
    const { lnfMean, lnfRstd } = acts;
    layernormBackward(
      dx,
      this.grad('lnf.w'),
      this.grad('lnf.b'),
      dlnf,
      acts.input,
      this.param('lnf.w'),
      lnfMean,
      lnfRstd,
      B,
      T,
      C,
    );
    return dx;
  }

  private param(name: string): Floats {
    return this.params[this.indexOf(name)]!;
  }

  private grad(name: string): Floats {
    return this.grads[this.indexOf(name)]!;
  }

  private indexOf(name: string): number {
    const i = this.index.get(name);
    if (i === undefined) throw new Error(`stage ${this.range.index} has no parameter ${name}`);
    return i;
  }

  private copyIn(data: ArrayLike<number>): Floats {
    const out = this.alloc(data.length);
    out.set(data);
    return out;
  }

  /** Checks that imported tensors are exactly this stage's parameters, in order, and copies them in. */
  private readNamed(what: string, tensors: NamedTensor[]): Floats[] {
    if (tensors.length !== this.specs.length) {
      throw new Error(
        `state.${what} has ${tensors.length} tensors, stage ${this.range.index} has ${this.specs.length}`,
      );
    }
    return this.specs.map((spec, i) => {
      const t = tensors[i]!;
      if (t.name !== spec.name) throw new Error(`state.${what}[${i}] is ${t.name}, expected ${spec.name}`);
      if (t.shape.join(',') !== spec.shape.join(',') || t.data.length !== numel(spec.shape)) {
        throw new Error(
          `state.${what} ${t.name} has shape [${t.shape}] and ${t.data.length} values, expected [${spec.shape}]`,
        );
      }
      return this.copyIn(t.data);
    });
  }
}

function validateRange(config: GptConfig, range: StageRange): void {
  const ok =
    Number.isInteger(range.count) &&
    range.count >= 1 &&
    Number.isInteger(range.index) &&
    range.index >= 0 &&
    range.index < range.count &&
    Number.isInteger(range.firstBlock) &&
    Number.isInteger(range.endBlock) &&
    range.firstBlock >= 0 &&
    range.firstBlock <= range.endBlock &&
    range.endBlock <= config.layers;
  if (!ok) throw new Error(`invalid stage range ${JSON.stringify(range)} for a ${config.layers}-block model`);
}

function checkTokens(what: string, ids: Int32Array, n: number, vocab: number): Int32Array {
  if (ids.length !== n) throw new Error(`${what} must have ${n} ids (batch*seq), got ${ids.length}`);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= vocab)
      throw new Error(`${what}[${i}] = ${id} is outside the vocabulary [0, ${vocab})`);
  }
  return ids;
}
