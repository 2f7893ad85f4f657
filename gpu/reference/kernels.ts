/**
 * The CPU reference of every training kernel, with the semantics of llm.c's train_gpt2.c: GPU kernels are
 * tested against these functions. Layouts: activations are (B, T, C) row-major; matrices are (out, in)
 * row-major so y = x W^T + b; attention scores are (B, NH, T, T).
 *
 * Every backward function ACCUMULATES (+=) into its outputs, so callers zero them first. Arithmetic inside a
 * kernel runs in f64 (JavaScript numbers) and is rounded only when stored, which makes the reference at least
 * as accurate as any f32 kernel. Arrays may be Float64Array so finite-difference tests can run in f64.
 */
import type { AdamWSettings } from '../stage/types.js';

export type Floats = Float32Array | Float64Array;

const LN_EPS = 1e-5;
const GELU_SCALE = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

/** out[b,t,:] = wte[inp[b,t],:] + wpe[t,:] */
export function encoderForward(
  out: Floats,
  inp: Int32Array,
  wte: Floats,
  wpe: Floats,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      const tok = inp[b * T + t]! * C;
      const pos = t * C;
      for (let i = 0; i < C; i++) out[o + i] = wte[tok + i]! + wpe[pos + i]!;
    }
  }
}

export function encoderBackward(
  dwte: Floats,
  dwpe: Floats,
  dout: Floats,
  inp: Int32Array,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      const tok = inp[b * T + t]! * C;
      const pos = t * C;
      for (let i = 0; i < C; i++) {
        const d = dout[o + i]!;
        dwte[tok + i]! += d;
        dwpe[pos + i]! += d;
      }
    }
  }
}

/** LayerNorm over the last axis with the biased variance and eps 1e-5; saves mean and 1/std per position. */
export function layernormForward(
  out: Floats,
  mean: Floats,
  rstd: Floats,
  inp: Floats,
  weight: Floats,
  bias: Floats,
  B: number,
  T: number,
  C: number,
): void {
  for (let bt = 0; bt < B * T; bt++) {
    const x = bt * C;
    let sum = 0;
    for (let i = 0; i < C; i++) sum += inp[x + i]!;
    const m = sum / C;
    let sq = 0;
    for (let i = 0; i < C; i++) {
      const d = inp[x + i]! - m;
      sq += d * d;
    }
    const s = 1 / Math.sqrt(sq / C + LN_EPS);
    for (let i = 0; i < C; i++) out[x + i] = (inp[x + i]! - m) * s * weight[i]! + bias[i]!;
    mean[bt] = m;
    rstd[bt] = s;
  }
}

export function layernormBackward(
  dinp: Floats,
  dweight: Floats,
  dbias: Floats,
  dout: Floats,
  inp: Floats,
  weight: Floats,
  mean: Floats,
  rstd: Floats,
  B: number,
  T: number,
  C: number,
): void {
  for (let bt = 0; bt < B * T; bt++) {
    const x = bt * C;
    const m = mean[bt]!;
    const s = rstd[bt]!;
    // The two reductions of the LayerNorm Jacobian: mean of dnorm and mean of dnorm * norm.
    let dnormMean = 0;
    let dnormNormMean = 0;
    for (let i = 0; i < C; i++) {
      const norm = (inp[x + i]! - m) * s;
      const dnorm = weight[i]! * dout[x + i]!;
      dnormMean += dnorm;
      dnormNormMean += dnorm * norm;
    }
    dnormMean /= C;
    dnormNormMean /= C;
    for (let i = 0; i < C; i++) {
      const norm = (inp[x + i]! - m) * s;
      const d = dout[x + i]!;
      const dnorm = weight[i]! * d;
      dbias[i]! += d;
      dweight[i]! += norm * d;
      dinp[x + i]! += (dnorm - dnormMean - norm * dnormNormMean) * s;
    }
  }
}

/** out (B*T, OC) = inp (B*T, C) · weight (OC, C)^T + bias (OC). */
export function matmulForward(
  out: Floats,
  inp: Floats,
  weight: Floats,
  bias: Floats | null,
  B: number,
  T: number,
  C: number,
  OC: number,
): void {
  for (let bt = 0; bt < B * T; bt++) {
    const x = bt * C;
    const y = bt * OC;
    for (let o = 0; o < OC; o++) {
      const w = o * C;
      let acc = bias === null ? 0 : bias[o]!;
      for (let i = 0; i < C; i++) acc += inp[x + i]! * weight[w + i]!;
      out[y + o] = acc;
    }
  }
}

export function matmulBackward(
  dinp: Floats,
  dweight: Floats,
  dbias: Floats | null,
  dout: Floats,
  inp: Floats,
  weight: Floats,
  B: number,
  T: number,
  C: number,
  OC: number,
): void {
  const BT = B * T;
  // Each sum runs in an f64 row accumulator so the inner loops walk memory contiguously.
  const acc = new Float64Array(C);
  for (let bt = 0; bt < BT; bt++) {
    acc.fill(0);
    for (let o = 0; o < OC; o++) {
      const d = dout[bt * OC + o]!;
      const w = o * C;
      for (let i = 0; i < C; i++) acc[i]! += d * weight[w + i]!;
    }
    const x = bt * C;
    for (let i = 0; i < C; i++) dinp[x + i]! += acc[i]!;
  }
  for (let o = 0; o < OC; o++) {
    acc.fill(0);
    let biasAcc = 0;
    for (let bt = 0; bt < BT; bt++) {
      const d = dout[bt * OC + o]!;
      biasAcc += d;
      const x = bt * C;
      for (let i = 0; i < C; i++) acc[i]! += d * inp[x + i]!;
    }
    const w = o * C;
    for (let i = 0; i < C; i++) dweight[w + i]! += acc[i]!;
    if (dbias !== null) dbias[o]! += biasAcc;
  }
}

/** Offsets of one (batch, head, query position) of causal attention in the layouts both passes use. */
interface AttentionRow {
  t: number;
  /** Head size. */
  hs: number;
  /** Offset of the query in inp (B, T, 3C). */
  q: number;
  /** Offset of the scores row in preatt/att (B, NH, T, T). */
  row: number;
  /** Offset of the output in out (B, T, C). */
  o: number;
  /** Offset in inp of the key at position t2; its value vector follows C channels later. */
  key: (t2: number) => number;
}

function forEachAttentionRow(
  B: number,
  T: number,
  C: number,
  NH: number,
  visit: (r: AttentionRow) => void,
): void {
  const hs = C / NH;
  const C3 = 3 * C;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const keyBase = b * T * C3 + C + h * hs;
      const key = (t2: number): number => keyBase + t2 * C3;
      for (let t = 0; t < T; t++) {
        visit({
          t,
          hs,
          q: (b * T + t) * C3 + h * hs,
          row: ((b * NH + h) * T + t) * T,
          o: (b * T + t) * C + h * hs,
          key,
        });
      }
    }
  }
}

/**
 * Causal multi-head attention. inp is (B, T, 3C) holding q, k, v; head h uses channels [h*hs, (h+1)*hs) of
 * each. preatt holds the scaled scores and att their row softmax; entries above the diagonal (t2 > t) of
 * both are written as 0, so the arrays are fully defined.
 */
export function attentionForward(
  out: Floats,
  preatt: Floats,
  att: Floats,
  inp: Floats,
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  const scale = 1 / Math.sqrt(C / NH);
  forEachAttentionRow(B, T, C, NH, ({ t, hs, q, row, o, key }) => {
    let max = -Infinity;
    for (let t2 = 0; t2 <= t; t2++) {
      const k = key(t2);
      let dot = 0;
      for (let i = 0; i < hs; i++) dot += inp[q + i]! * inp[k + i]!;
      const score = dot * scale;
      preatt[row + t2] = score;
      if (score > max) max = score;
    }
    // Exponentiate the stored (rounded) scores so att is exactly the softmax of preatt.
    let sum = 0;
    for (let t2 = 0; t2 <= t; t2++) sum += Math.exp(preatt[row + t2]! - max);
    for (let t2 = 0; t2 <= t; t2++) att[row + t2] = Math.exp(preatt[row + t2]! - max) / sum;
    for (let t2 = t + 1; t2 < T; t2++) {
      preatt[row + t2] = 0;
      att[row + t2] = 0;
    }
    for (let i = 0; i < hs; i++) {
      let acc = 0;
      for (let t2 = 0; t2 <= t; t2++) acc += att[row + t2]! * inp[key(t2) + C + i]!;
      out[o + i] = acc;
    }
  });
}

/**
 * Backward of attentionForward. datt and dpreatt are scratch gradients (B, NH, T, T): like llm.c, the
 * softmax and score backward read them after accumulating, so pass zeroed buffers.
 */
export function attentionBackward(
  dinp: Floats,
  dpreatt: Floats,
  datt: Floats,
  dout: Floats,
  inp: Floats,
  att: Floats,
  B: number,
  T: number,
  C: number,
  NH: number,
): void {
  const scale = 1 / Math.sqrt(C / NH);
  forEachAttentionRow(B, T, C, NH, ({ t, hs, q, row, o, key }) => {
    // out = att · v
    for (let t2 = 0; t2 <= t; t2++) {
      const v = key(t2) + C;
      const a = att[row + t2]!;
      let acc = 0;
      for (let i = 0; i < hs; i++) {
        const d = dout[o + i]!;
        acc += inp[v + i]! * d;
        dinp[v + i]! += a * d;
      }
      datt[row + t2]! += acc;
    }
    // softmax: dpreatt_j = att_j * (datt_j - sum_k att_k datt_k)
    let dot = 0;
    for (let t2 = 0; t2 <= t; t2++) dot += att[row + t2]! * datt[row + t2]!;
    for (let t2 = 0; t2 <= t; t2++) dpreatt[row + t2]! += att[row + t2]! * (datt[row + t2]! - dot);
    // preatt = scale * q · k
    for (let t2 = 0; t2 <= t; t2++) {
      const k = key(t2);
      const d = dpreatt[row + t2]! * scale;
      for (let i = 0; i < hs; i++) {
        dinp[q + i]! += inp[k + i]! * d;
        dinp[k + i]! += inp[q + i]! * d;
      }
    }
  });
}

/** GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluForward(out: Floats, inp: Floats, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i]!;
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x)));
  }
}

export function geluBackward(dinp: Floats, inp: Floats, dout: Floats, N: number): void {
  for (let i = 0; i < N; i++) {
    const x = inp[i]!;
    const u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
    const th = Math.tanh(u);
    const sech2 = 1 - th * th;
    const local = 0.5 * (1 + th) + 0.5 * x * sech2 * GELU_SCALE * (1 + 3 * GELU_CUBIC * x * x);
    dinp[i]! += local * dout[i]!;
  }
}

export function residualForward(out: Floats, inp1: Floats, inp2: Floats, N: number): void {
  for (let i = 0; i < N; i++) out[i] = inp1[i]! + inp2[i]!;
}

export function residualBackward(dinp1: Floats, dinp2: Floats, dout: Floats, N: number): void {
  for (let i = 0; i < N; i++) {
    dinp1[i]! += dout[i]!;
    dinp2[i]! += dout[i]!;
  }
}

/** Row softmax over the vocabulary, max-subtracted. */
export function softmaxForward(probs: Floats, logits: Floats, B: number, T: number, V: number): void {
  for (let bt = 0; bt < B * T; bt++) {
    const r = bt * V;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[r + i]! > max) max = logits[r + i]!;
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[r + i]! - max);
    for (let i = 0; i < V; i++) probs[r + i] = Math.exp(logits[r + i]! - max) / sum;
  }
}

/** losses[b,t] = -log probs[b,t,targets[b,t]] */
export function crossentropyForward(
  losses: Floats,
  probs: Floats,
  targets: Int32Array,
  B: number,
  T: number,
  V: number,
): void {
  for (let bt = 0; bt < B * T; bt++) losses[bt] = -Math.log(probs[bt * V + targets[bt]!]!);
}

/** Fused softmax + cross-entropy backward: dlogits += (probs - onehot(target)) * dlosses. */
export function crossentropySoftmaxBackward(
  dlogits: Floats,
  dlosses: Floats,
  probs: Floats,
  targets: Int32Array,
  B: number,
  T: number,
  V: number,
): void {
  for (let bt = 0; bt < B * T; bt++) {
    const r = bt * V;
    const dl = dlosses[bt]!;
    const target = targets[bt]!;
    for (let i = 0; i < V; i++) dlogits[r + i]! += (probs[r + i]! - (i === target ? 1 : 0)) * dl;
  }
}

/**
 * One AdamW step with bias correction; `step` is the 1-based step number t. The gradient is multiplied by
 * gradScale (global-norm clipping) before use; weight decay is decoupled and applies only where `decay`.
 */
export function adamwUpdate(
  params: Floats,
  grads: Floats,
  m: Floats,
  v: Floats,
  step: number,
  s: AdamWSettings,
  decay: boolean,
  gradScale: number,
): void {
  const c1 = 1 - Math.pow(s.beta1, step);
  const c2 = 1 - Math.pow(s.beta2, step);
  const wd = decay ? s.weightDecay : 0;
  for (let i = 0; i < params.length; i++) {
    const g = grads[i]! * gradScale;
    const mi = s.beta1 * m[i]! + (1 - s.beta1) * g;
    const vi = s.beta2 * v[i]! + (1 - s.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const mHat = mi / c1;
    const vHat = vi / c2;
    params[i]! -= s.learningRate * (mHat / (Math.sqrt(vHat) + s.eps) + wd * params[i]!);
  }
}

/** Sum of squares in index order, accumulated in f64. */
export function squaredNorm(values: Floats): number {
  let acc = 0;
  for (let i = 0; i < values.length; i++) acc += values[i]! * values[i]!;
  return acc;
}
