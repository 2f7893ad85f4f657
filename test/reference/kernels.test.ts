/**
 * Every backward kernel of the CPU reference against f64 central differences (h = 1e-5) of the scalar
 * L = sum(out * w) for a random w. In f64 the truncation and rounding errors are about 1e-10, so the stated
 * tolerance (atol 1e-7 + rtol 1e-6) leaves a wide margin while still catching any wrong term.
 */
import { describe, expect, it } from 'vitest';
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
} from '../../gpu/reference/kernels.js';
import { dot, expectGradMatches, randomF64, randomTokens } from './finite-diff.js';

const tol = { atol: 1e-7, rtol: 1e-6 };
const B = 2;
const T = 5;
const C = 8;

describe('encoder', () => {
  it('backward matches finite differences and accumulates', () => {
    const V = 7;
    const wte = randomF64(V * C, 1);
    const wpe = randomF64(T * C, 2);
    const inp = randomTokens(B * T, V, 3);
    const w = randomF64(B * T * C, 4);
    const out = new Float64Array(B * T * C);
    const loss = (): number => {
      encoderForward(out, inp, wte, wpe, B, T, C);
      return dot(out, w);
    };
    const dwte = new Float64Array(V * C);
    const dwpe = new Float64Array(T * C);
    encoderBackward(dwte, dwpe, w, inp, B, T, C);
    expectGradMatches('dwte', wte, dwte, loss, tol);
    expectGradMatches('dwpe', wpe, dwpe, loss, tol);
    const once = Float64Array.from(dwpe);
    encoderBackward(dwte, dwpe, w, inp, B, T, C);
    expect(Array.from(dwpe)).toEqual(Array.from(once, (x) => 2 * x));
  });
});

describe('layernorm', () => {
  it('normalises each position and saves mean and rstd', () => {
    const inp = randomF64(B * T * C, 5, 3);
    const out = new Float64Array(B * T * C);
    const mean = new Float64Array(B * T);
    const rstd = new Float64Array(B * T);
    layernormForward(out, mean, rstd, inp, new Float64Array(C).fill(1), new Float64Array(C), B, T, C);
    for (let bt = 0; bt < B * T; bt++) {
      const row = out.subarray(bt * C, (bt + 1) * C);
      expect(row.reduce((a, b) => a + b, 0) / C).toBeCloseTo(0, 12);
      expect(row.reduce((a, b) => a + b * b, 0) / C).toBeCloseTo(1, 4);
      expect(mean[bt]).toBeCloseTo(inp.subarray(bt * C, (bt + 1) * C).reduce((a, b) => a + b, 0) / C, 12);
    }
  });

  it('backward matches finite differences', () => {
    const inp = randomF64(B * T * C, 6, 2);
    const weight = randomF64(C, 7);
    const bias = randomF64(C, 8);
    const w = randomF64(B * T * C, 9);
    const out = new Float64Array(B * T * C);
    const mean = new Float64Array(B * T);
    const rstd = new Float64Array(B * T);
    const loss = (): number => {
      layernormForward(out, mean, rstd, inp, weight, bias, B, T, C);
      return dot(out, w);
    };
    loss();
    const dinp = new Float64Array(B * T * C);
    const dweight = new Float64Array(C);
    const dbias = new Float64Array(C);
    layernormBackward(dinp, dweight, dbias, w, inp, weight, mean, rstd, B, T, C);
    expectGradMatches('dinp', inp, dinp, loss, tol);
    expectGradMatches('dweight', weight, dweight, loss, tol);
    expectGradMatches('dbias', bias, dbias, loss, tol);
  });
});

describe('matmul', () => {
  const OC = 6;
  for (const withBias of [true, false]) {
    it(`backward matches finite differences (${withBias ? 'with' : 'without'} bias)`, () => {
      const inp = randomF64(B * T * C, 10);
      const weight = randomF64(OC * C, 11);
      const bias = withBias ? randomF64(OC, 12) : null;
      const w = randomF64(B * T * OC, 13);
      const out = new Float64Array(B * T * OC);
      const loss = (): number => {
        matmulForward(out, inp, weight, bias, B, T, C, OC);
        return dot(out, w);
      };
      const dinp = new Float64Array(B * T * C);
      const dweight = new Float64Array(OC * C);
      const dbias = withBias ? new Float64Array(OC) : null;
      matmulBackward(dinp, dweight, dbias, w, inp, weight, B, T, C, OC);
      expectGradMatches('dinp', inp, dinp, loss, tol);
      expectGradMatches('dweight', weight, dweight, loss, tol);
      if (bias !== null && dbias !== null) expectGradMatches('dbias', bias, dbias, loss, tol);
    });
  }

  it('computes y = x W^T + b', () => {
    const out = new Float32Array(2);
    // x = [1, 2], W = [[1, 0], [3, 4]], b = [10, 20]
    matmulForward(
      out,
      Float32Array.of(1, 2),
      Float32Array.of(1, 0, 3, 4),
      Float32Array.of(10, 20),
      1,
      1,
      2,
      2,
    );
    expect(Array.from(out)).toEqual([11, 31]);
  });
});

describe('attention', () => {
  const NH = 2;
  it('is causal, and each attention row is a distribution over the past', () => {
    const inp = randomF64(B * T * 3 * C, 14);
    const out = new Float64Array(B * T * C);
    const preatt = new Float64Array(B * NH * T * T);
    const att = new Float64Array(B * NH * T * T);
    attentionForward(out, preatt, att, inp, B, T, C, NH);
    for (let r = 0; r < B * NH * T; r++) {
      const t = r % T;
      const row = att.subarray(r * T, (r + 1) * T);
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
      for (let t2 = t + 1; t2 < T; t2++) expect(row[t2]).toBe(0);
    }
    // The first position attends only to itself, so its output is its own value vector.
    for (let i = 0; i < C; i++) expect(out[i]).toBeCloseTo(inp[2 * C + i]!, 12);
  });

  it('backward matches finite differences', () => {
    const inp = randomF64(B * T * 3 * C, 15);
    const w = randomF64(B * T * C, 16);
    const out = new Float64Array(B * T * C);
    const preatt = new Float64Array(B * NH * T * T);
    const att = new Float64Array(B * NH * T * T);
    const loss = (): number => {
      attentionForward(out, preatt, att, inp, B, T, C, NH);
      return dot(out, w);
    };
    loss();
    const dinp = new Float64Array(inp.length);
    attentionBackward(
      dinp,
      new Float64Array(att.length),
      new Float64Array(att.length),
      w,
      inp,
      att,
      B,
      T,
      C,
      NH,
    );
    expectGradMatches('dinp', inp, dinp, loss, tol);
  });
});

describe('gelu', () => {
  it('matches the tanh approximation and its derivative', () => {
    const inp = randomF64(64, 17, 4);
    const w = randomF64(64, 18);
    const out = new Float64Array(64);
    geluForward(out, Float64Array.of(0, 1, -1), 3);
    expect(out[0]).toBe(0);
    expect(out[1]).toBeCloseTo(0.841192, 6);
    expect(out[2]).toBeCloseTo(-0.158808, 6);
    const loss = (): number => {
      geluForward(out, inp, 64);
      return dot(out, w);
    };
    const dinp = new Float64Array(64);
    geluBackward(dinp, inp, w, 64);
    expectGradMatches('dinp', inp, dinp, loss, tol);
  });
});

describe('residual', () => {
  it('backward matches finite differences', () => {
    const a = randomF64(20, 19);
    const b = randomF64(20, 20);
    const w = randomF64(20, 21);
    const out = new Float64Array(20);
    const loss = (): number => {
      residualForward(out, a, b, 20);
      return dot(out, w);
    };
    const da = new Float64Array(20);
    const db = new Float64Array(20);
    residualBackward(da, db, w, 20);
    expectGradMatches('dinp1', a, da, loss, tol);
    expectGradMatches('dinp2', b, db, loss, tol);
  });
});

describe('softmax + cross-entropy', () => {
  const V = 11;
  it('fused backward matches finite differences of the weighted losses', () => {
    const logits = randomF64(B * T * V, 22, 3);
    const targets = randomTokens(B * T, V, 23);
    const dlosses = randomF64(B * T, 24);
    const probs = new Float64Array(B * T * V);
    const losses = new Float64Array(B * T);
    const loss = (): number => {
      softmaxForward(probs, logits, B, T, V);
      crossentropyForward(losses, probs, targets, B, T, V);
      return dot(losses, dlosses);
    };
    loss();
    for (let bt = 0; bt < B * T; bt++) {
      expect(probs.subarray(bt * V, (bt + 1) * V).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    }
    const dlogits = new Float64Array(B * T * V);
    crossentropySoftmaxBackward(dlogits, dlosses, probs, targets, B, T, V);
    expectGradMatches('dlogits', logits, dlogits, loss, tol);
  });

  it('is stable for large logits', () => {
    const probs = new Float32Array(3);
    softmaxForward(probs, Float32Array.of(1000, 1000, -1000), 1, 1, 3);
    expect(Array.from(probs)).toEqual([0.5, 0.5, 0]);
  });
});

describe('adamw', () => {
  const s = { learningRate: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5 };
  it('takes a bias-corrected first step of lr * sign(g) plus decoupled decay', () => {
    const params = Float64Array.of(1, -2, 3);
    const grads = Float64Array.of(0.5, 0.25, -4);
    const m = new Float64Array(3);
    const v = new Float64Array(3);
    adamwUpdate(params, grads, m, v, 1, s, true, 2);
    expect(params[0]).toBeCloseTo(1 - 0.1 * (1 + 0.5 * 1), 7);
    expect(params[1]).toBeCloseTo(-2 - 0.1 * (1 + 0.5 * -2), 7);
    expect(params[2]).toBeCloseTo(3 - 0.1 * (-1 + 0.5 * 3), 7);
    expect(m[2]).toBeCloseTo(0.1 * -8, 12);
    expect(v[2]).toBeCloseTo(0.01 * 64, 12);
  });

  it('skips weight decay where decay is false and follows the moment recursions', () => {
    const params = Float64Array.of(1);
    const m = new Float64Array(1);
    const v = new Float64Array(1);
    adamwUpdate(params, Float64Array.of(1), m, v, 1, s, false, 1);
    adamwUpdate(params, Float64Array.of(-1), m, v, 2, s, false, 1);
    const m2 = 0.9 * 0.1 - 0.1;
    const v2 = 0.99 * 0.01 + 0.01;
    expect(m[0]).toBeCloseTo(m2, 12);
    expect(v[0]).toBeCloseTo(v2, 12);
    const second = m2 / (1 - 0.81) / (Math.sqrt(v2 / (1 - 0.99 * 0.99)) + 1e-8);
    expect(params[0]).toBeCloseTo(1 - 0.1 - 0.1 * second, 7);
  });
});

describe('squaredNorm', () => {
  it('sums squares in f64', () => {
    expect(squaredNorm(Float32Array.of(3, 4))).toBe(25);
    expect(squaredNorm(new Float32Array(0))).toBe(0);
  });
});
