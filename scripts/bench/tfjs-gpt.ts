/**
 * The baseline for the train-step benchmark: the same GPT as gpu/ (pre-LayerNorm, GELU, causal attention,
 * untied head, AdamW with decoupled decay and global-norm clipping) written as TF.js runs it fastest: weights
 * stored (in, out) so every product is a plain `tf.fused.matMul` with its bias fused in, positions added by
 * broadcasting, and one `tf.variableGrads` and `tf.train.adam` step. (`tf.batchNorm` over the row moments
 * would save LayerNorm ops, but its gradient refuses per-row statistics.) Same initial values as the engine
 * (its (out, in) matrices transposed once here), so the first losses agree.
 */
import type * as Tf from '@tensorflow/tfjs';
import type { GptConfig } from '../../gpu/model/config.js';
import { wholeModel } from '../../gpu/model/config.js';
import { initStageParams, stageParams } from '../../gpu/model/params.js';
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

/** Row-major (rows, cols) values as (cols, rows). */
function transposed(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

export class TfGpt {
  private readonly params = new Map<string, Tf.Variable>();
  private readonly decayed: Tf.Variable[] = [];
  private readonly optimizer: Tf.AdamOptimizer;
  private readonly mask: Tf.Tensor;

  constructor(
    private readonly tf: TfModule,
    private readonly o: TfGptOptions,
  ) {
    const range = wholeModel(o.config);
    const values = initStageParams(o.config, range, o.seed);
    stageParams(o.config, range).forEach((spec, i) => {
      // Linear weights (out, in) -> (in, out); the embeddings stay (rows, C) for gather.
      const linear = spec.shape.length === 2 && spec.name !== 'wte' && spec.name !== 'wpe';
      const [rows, cols] = spec.shape as [number, number];
      const tensor = linear
        ? tf.tensor(transposed(values[i]!, rows, cols), [cols, rows])
        : tf.tensor(values[i]!, spec.shape);
      const variable = tf.variable(tensor, true, spec.name);
      tensor.dispose();
      this.params.set(spec.name, variable);
      if (spec.decay) this.decayed.push(variable);
    });
    const { learningRate, beta1, beta2, eps } = o.adamw;
    this.optimizer = tf.train.adam(learningRate, beta1, beta2, eps);
    // Added to the attention scores: 0 on and below the diagonal, a large negative number above it.
    this.mask = tf.tidy(() => tf.sub(1, tf.linalg.bandPart(tf.ones([o.seq, o.seq]), -1, 0)).mul(-1e9));
  }

  private p(name: string): Tf.Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`no parameter ${name}`);
    return t;
  }

  private linear(x: Tf.Tensor2D, name: string, bias = true): Tf.Tensor2D {
    return this.tf.fused.matMul({
      a: x,
      b: this.p(`${name}.w`) as Tf.Tensor2D,
      bias: bias ? this.p(`${name}.b`) : undefined,
    }) as Tf.Tensor2D;
  }

  private layerNorm(x: Tf.Tensor2D, name: string): Tf.Tensor2D {
    const tf = this.tf;
    const { mean, variance } = tf.moments(x, -1, true);
    const norm = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5)));
    return tf.add(tf.mul(norm, this.p(`${name}.w`)), this.p(`${name}.b`));
  }

  /** GPT-2's tanh approximation, as the engine's kernel (TF.js has no fused GELU). */
  private gelu(x: Tf.Tensor2D): Tf.Tensor2D {
    const tf = this.tf;
    const inner = tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.mul(tf.mul(x, x), x))));
    return tf.mul(tf.mul(0.5, x), tf.add(1, tf.tanh(inner)));
  }

  private attention(x: Tf.Tensor2D, l: number): Tf.Tensor2D {
    const tf = this.tf;
    const { batch: B, seq: T } = this.o;
    const { width: C, heads: NH } = this.o.config;
    const hs = C / NH;
    const qkv = this.linear(x, `blocks.${l}.attn.qkv`).reshape([B, T, 3, NH, hs]).transpose([2, 0, 3, 1, 4]);
    const [q, k, v] = tf.unstack(qkv) as Tf.Tensor4D[];
    const scores = tf.add(tf.matMul(tf.mul(q!, 1 / Math.sqrt(hs)), k!, false, true), this.mask);
    const y = tf
      .matMul(tf.softmax(scores), v!)
      .transpose([0, 2, 1, 3])
      .reshape([B * T, C]) as Tf.Tensor2D;
    return this.linear(y, `blocks.${l}.attn.proj`);
  }

  private loss(tokens: Tf.Tensor1D, targets: Tf.Tensor1D): Tf.Scalar {
    const tf = this.tf;
    const { seq: T, batch: B } = this.o;
    const { vocabSize: V, layers, width: C } = this.o.config;
    const wpe = tf.slice(this.p('wpe'), [0, 0], [T, C]);
    let x = tf
      .add(tf.gather(this.p('wte'), tokens).reshape([B, T, C]), wpe)
      .reshape([B * T, C]) as Tf.Tensor2D;
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
    const { learningRate: lr, weightDecay } = this.o.adamw;
    const lossValue = tf.tidy(() => {
      const tok = tf.tensor1d(tokens, 'int32');
      const tgt = tf.tensor1d(targets, 'int32');
      const { value, grads } = tf.variableGrads(() => this.loss(tok, tgt));
      // Pairwise adds: tf.addN over every tensor would bind more storage buffers than WebGPU's default 8.
      const norm = tf.sqrt(
        Object.values(grads)
          .map((g) => tf.sum(tf.square(g)))
          .reduce((a, b) => tf.add(a, b)),
      );
      const clip = tf.minimum(1, tf.div(this.o.gradClip, tf.add(norm, 1e-6)));
      const clipped = Object.entries(grads).map(([name, g]) => ({ name, tensor: tf.mul(g, clip) }));
      // AdamW's decoupled decay, p -= lr * wd * p, then Adam's update.
      for (const p of this.decayed) p.assign(tf.mul(p, 1 - lr * weightDecay));
      this.optimizer.applyGradients(clipped);
      return tf.keep(value);
    });
    const [loss] = await lossValue.data();
    lossValue.dispose();
    return loss!;
  }

  dispose(): void {
    for (const t of [...this.params.values(), this.mask]) t.dispose();
    this.optimizer.dispose();
  }
}
