/**
 * The baseline for the train-step benchmark: the same GPT as gpu/ (pre-LayerNorm, GELU, causal attention,
 * untied head, llm.c's (out, in) weight layout, AdamW with global-norm clipping) written with TF.js ops and
 * trained with tf.variableGrads, on whatever backend TF.js has been set to.
 */
import type * as Tf from '@tensorflow/tfjs';
import type { GptConfig } from '../../gpu/model/config.js';
import { initStageParams, stageParams } from '../../gpu/model/params.js';
import { wholeModel } from '../../gpu/model/config.js';
import type { AdamWSettings } from '../../gpu/stage/types.js';

type TfModule = typeof Tf;

export interface TfGptOptions {
  config: GptConfig;
  batch: number;
  seq: number;
  adamw: AdamWSettings;
  gradClip: number;
  seed: number;
}

export class TfGpt {
  private readonly params = new Map<string, Tf.Variable>();
  private readonly m: Tf.Variable[] = [];
  private readonly v: Tf.Variable[] = [];
  private readonly mask: Tf.Tensor;
  private steps = 0;

  constructor(
    private readonly tf: TfModule,
    private readonly o: TfGptOptions,
  ) {
    const range = wholeModel(o.config);
    const values = initStageParams(o.config, range, o.seed);
    stageParams(o.config, range).forEach((spec, i) => {
      const variable = tf.variable(tf.tensor(values[i]!, spec.shape), true, spec.name);
      this.params.set(spec.name, variable);
      this.m.push(tf.variable(tf.zerosLike(variable), false));
      this.v.push(tf.variable(tf.zerosLike(variable), false));
    });
    // Added to the attention scores: 0 on and below the diagonal, a large negative number above it.
    this.mask = tf.tidy(() => tf.sub(1, tf.linalg.bandPart(tf.ones([o.seq, o.seq]), -1, 0)).mul(-1e9));
  }

  private p(name: string): Tf.Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`no parameter ${name}`);
    return t;
  }

  private linear(x: Tf.Tensor2D, name: string, bias = true): Tf.Tensor2D {
    const y = this.tf.matMul(x, this.p(`${name}.w`) as Tf.Tensor2D, false, true) as Tf.Tensor2D;
    return bias ? (this.tf.add(y, this.p(`${name}.b`)) as Tf.Tensor2D) : y;
  }

  private layerNorm(x: Tf.Tensor2D, name: string): Tf.Tensor2D {
    const { mean, variance } = this.tf.moments(x, -1, true);
    const norm = this.tf.div(this.tf.sub(x, mean), this.tf.sqrt(this.tf.add(variance, 1e-5)));
    return this.tf.add(this.tf.mul(norm, this.p(`${name}.w`)), this.p(`${name}.b`));
  }

  /** GPT-2's tanh approximation, as the engine's kernel. */
  private gelu(x: Tf.Tensor2D): Tf.Tensor2D {
    const tf = this.tf;
    const inner = tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3))));
    return tf.mul(tf.mul(0.5, x), tf.add(1, tf.tanh(inner)));
  }

  private attention(x: Tf.Tensor2D, l: number): Tf.Tensor2D {
    const tf = this.tf;
    const { batch: B, seq: T } = this.o;
    const { width: C, heads: NH } = this.o.config;
    const hs = C / NH;
    const qkv = this.linear(x, `blocks.${l}.attn.qkv`).reshape([B, T, 3, NH, hs]).transpose([2, 0, 3, 1, 4]);
    const [q, k, v] = tf.unstack(qkv) as Tf.Tensor4D[];
    const scores = tf.add(tf.mul(tf.matMul(q!, k!, false, true), 1 / Math.sqrt(hs)), this.mask);
    const y = tf
      .matMul(tf.softmax(scores), v!)
      .transpose([0, 2, 1, 3])
      .reshape([B * T, C]) as Tf.Tensor2D;
    return this.linear(y, `blocks.${l}.attn.proj`);
  }

  private loss(tokens: Tf.Tensor1D, targets: Tf.Tensor1D): Tf.Scalar {
    const tf = this.tf;
    const { seq: T, batch: B } = this.o;
    const { vocabSize: V, layers } = this.o.config;
    const positions = tf.tile(tf.range(0, T, 1, 'int32'), [B]);
    let x = tf.add(tf.gather(this.p('wte'), tokens), tf.gather(this.p('wpe'), positions)) as Tf.Tensor2D;
    for (let l = 0; l < layers; l++) {
      x = tf.add(x, this.attention(this.layerNorm(x, `blocks.${l}.ln1`), l));
      const h = this.gelu(this.linear(this.layerNorm(x, `blocks.${l}.ln2`), `blocks.${l}.mlp.fc`));
      x = tf.add(x, this.linear(h, `blocks.${l}.mlp.proj`));
    }
    const logits = this.linear(this.layerNorm(x, 'lnf'), 'head', false);
    return tf.losses.softmaxCrossEntropy(tf.oneHot(targets, V), logits) as Tf.Scalar;
  }

  /** One optimizer step on one micro-batch; resolves with the loss once the update has run on the device. */
  async step(tokens: Int32Array, targets: Int32Array): Promise<number> {
    const tf = this.tf;
    const { learningRate: lr, beta1, beta2, eps, weightDecay } = this.o.adamw;
    this.steps++;
    const t = this.steps;
    const specs = stageParams(this.o.config, wholeModel(this.o.config));
    const lossValue = tf.tidy(() => {
      const tok = tf.tensor1d(tokens, 'int32');
      const tgt = tf.tensor1d(targets, 'int32');
      const { value, grads } = tf.variableGrads(() => this.loss(tok, tgt));
      // Pairwise adds: tf.addN over every tensor would bind more storage buffers than WebGPU's default 8.
      const squares = specs.map((s) => tf.sum(tf.square(grads[s.name]!)));
      const norm = tf.sqrt(squares.reduce((a, b) => tf.add(a, b)));
      const clip = tf.minimum(1, tf.div(this.o.gradClip, tf.add(norm, 1e-6)));
      specs.forEach((spec, i) => {
        const p = this.params.get(spec.name)!;
        const g = tf.mul(grads[spec.name]!, clip);
        const m = tf.add(tf.mul(beta1, this.m[i]!), tf.mul(1 - beta1, g));
        const v = tf.add(tf.mul(beta2, this.v[i]!), tf.mul(1 - beta2, tf.square(g)));
        const update = tf.div(tf.div(m, 1 - beta1 ** t), tf.add(tf.sqrt(tf.div(v, 1 - beta2 ** t)), eps));
        const decay = spec.decay ? tf.mul(weightDecay, p) : tf.zerosLike(p);
        this.m[i]!.assign(m);
        this.v[i]!.assign(v);
        p.assign(tf.sub(p, tf.mul(lr, tf.add(update, decay))));
      });
      return tf.keep(value);
    });
    const [loss] = await lossValue.data();
    lossValue.dispose();
    return loss!;
  }

  dispose(): void {
    for (const t of [...this.params.values(), ...this.m, ...this.v, this.mask]) t.dispose();
  }
}
