import {
  Uniforms,
  computePipeline,
  declare,
  first,
  flatMain,
  grid,
  launch,
  uniformBuffer,
  bindOp,
} from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;

const forwardShader = `${declare(['probs', 'losses', 'logits', 'targets: i32'], ['N', 'V'])}
${flatMain(WG)}
  if (i >= p.N) { return; }
  let r = i * p.V;
  var maxv = -3.0e38;
  for (var v = 0u; v < p.V; v++) { maxv = max(maxv, logits[r + v]); }
  var sum = 0.0;
  for (var v = 0u; v < p.V; v++) { sum += exp(logits[r + v] - maxv); }
  let inv = 1.0 / sum;
  for (var v = 0u; v < p.V; v++) { probs[r + v] = exp(logits[r + v] - maxv) * inv; }
  losses[i] = -log(probs[r + u32(targets[i])]);
}`;

const backwardShader = `${declare(['dlogits', 'probs', 'targets: i32'], ['N', 'V', 'dloss: f32'])}
${flatMain(WG)}
  if (i >= p.N * p.V) { return; }
  let row = i / p.V;
  let hit = select(0.0, 1.0, i % p.V == u32(targets[row]));
  dlogits[i] += (probs[i] - hit) * p.dloss;
}`;

/** An op whose per-position loss gradient is set before each submission. */
export interface ScaledOp extends EncodedOp {
  /** Sets dloss (the gradient of the objective with respect to each position's loss) for later submissions. */
  setScale(scale: number): void;
}

/** Softmax over the vocabulary with cross-entropy against targets (< V), and their fused backward. */
export class CrossEntropy {
  private readonly fwd: GPUComputePipeline;
  private readonly bwd: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.fwd = computePipeline(device, 'crossentropy.forward', forwardShader);
    this.bwd = computePipeline(device, 'crossentropy.backward', backwardShader);
  }

  /** probs = softmax(logits) per row; losses[row] = -log probs[row, targets[row]]. */
  forward(a: {
    probs: TensorRef;
    losses: TensorRef;
    logits: TensorRef;
    targets: TensorRef;
    rows: number;
    V: number;
  }): EncodedOp {
    const { rows: N, V } = a;
    const l = 'crossentropy.forward';
    return launch(
      this.device,
      this.fwd,
      l,
      [first(a.probs, N * V, l), first(a.losses, N, l), first(a.logits, N * V, l), first(a.targets, N, l)],
      new Uniforms().u32(N).u32(V),
      grid(N, WG),
    );
  }

  /** dlogits += (probs - onehot(targets)) * dloss, the same dloss for every row. */
  backward(a: {
    dlogits: TensorRef;
    probs: TensorRef;
    targets: TensorRef;
    rows: number;
    V: number;
  }): ScaledOp {
    const { rows: N, V } = a;
    const l = 'crossentropy.backward';
    const uniforms = (scale: number): ArrayBuffer => new Uniforms().u32(N).u32(V).f32(scale).bytes();
    const uniform = uniformBuffer(this.device, l, uniforms(0));
    const op = bindOp(
      this.device,
      this.bwd,
      l,
      [first(a.dlogits, N * V, l), first(a.probs, N * V, l), first(a.targets, N, l)],
      [uniform],
      grid(N * V, WG),
    );
    return {
      ...op,
      setScale: (scale: number) => this.device.queue.writeBuffer(uniform, 0, uniforms(scale)),
    };
  }
}
