import { describe, expect, it } from 'vitest';
import { splitBlocks, wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { stageParams, stageParamTensors } from '../../gpu/model/params.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import { NonFiniteError } from '../../gpu/stage/checks.js';
import type { StageState } from '../../gpu/stage/types.js';
import { randomTokens } from './finite-diff.js';

const config: GptConfig = { vocabSize: 32, contextLength: 8, width: 16, heads: 2, layers: 2, mlpRatio: 4 };
const shape = { batch: 2, seq: 8 };
const tokens = randomTokens(16, 32, 101);
const targets = randomTokens(16, 32, 102);
const seed = 7;

async function lossOf(stage: CpuStage): Promise<number> {
  const r = await stage.forward({ kind: 'tokens', tokens }, targets);
  if (r.kind !== 'loss') throw new Error('expected a loss');
  return r.loss;
}

/** The state with one parameter value replaced (the value is rounded to f32, which the caller accounts for). */
function withParam(state: StageState, tensor: number, i: number, value: number): StageState {
  const params = state.params.map((t, k) => {
    if (k !== tensor) return t;
    const data = Float32Array.from(t.data);
    data[i] = value;
    return { ...t, data };
  });
  return { ...state, params };
}

describe('CpuStage whole model', () => {
  it('starts near the uniform loss ln(V)', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, seed);
    expect(Math.abs((await lossOf(stage)) - Math.log(32))).toBeLessThan(0.1);
  });

  /**
   * Central differences in f64 storage, with each perturbed value rounded to f32 (the state format) and the
   * true step p+ - p- used as the divisor. With h = 1e-4 the truncation error is at most about 3e-5 relative
   * (measured) and f64 rounding about 1e-11; tolerance: |analytic - numeric| <= 1e-7 + 2e-4 |numeric|.
   */
  it('loss gradient matches finite differences for a sample of every tensor', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, seed, { precision: 'f64' });
    await lossOf(stage);
    await stage.backward(null, 1);
    const grads = await stage.exportGrads();
    const base = await stage.exportState();
    const h = 1e-4;
    let offset = 0;
    let checked = 0;
    for (let k = 0; k < base.params.length; k++) {
      const t = base.params[k]!;
      for (let s = 0; s < 4; s++) {
        const i = Math.floor((((s * 7919 + k * 104729) % 1000003) / 1000003) * t.data.length);
        const p = t.data[i]!;
        const up = Math.fround(p + h);
        const down = Math.fround(p - h);
        await stage.importState(withParam(base, k, i, up));
        const lUp = await lossOf(stage);
        await stage.importState(withParam(base, k, i, down));
        const lDown = await lossOf(stage);
        const numeric = (lUp - lDown) / (up - down);
        const analytic = grads[offset + i]!;
        if (Math.abs(analytic - numeric) > 1e-7 + 2e-4 * Math.abs(numeric)) {
          expect.fail(`${t.name}[${i}]: analytic ${analytic} vs numeric ${numeric}`);
        }
        checked++;
      }
      offset += t.data.length;
    }
    expect(checked).toBe(4 * base.params.length);
    expect(offset).toBe(stage.paramCount);
  });

  it('accumulates micro-batches until zeroGrad and scales with lossScale', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, seed);
    await lossOf(stage);
    await stage.backward(null, 1);
    const once = await stage.exportGrads();
    await stage.backward(null, 3);
    const four = await stage.exportGrads();
    for (let i = 0; i < once.length; i += 97) expect(four[i]).toBeCloseTo(4 * once[i]!, 6);
    stage.zeroGrad();
    expect(await stage.gradSquaredNorm()).toBe(0);
    await stage.backward(null, 4);
    expect(await stage.exportGrads()).toEqual(once.map((g) => 4 * g));
    const norm = once.reduce((a, g) => a + 16 * g * g, 0);
    expect(await stage.gradSquaredNorm()).toBeCloseTo(norm, 10);
  });

  it('rejects malformed input with a clear error', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, seed);
    await expect(stage.backward(null, 1)).rejects.toThrow(/forward/);
    await expect(stage.forward({ kind: 'tokens', tokens: new Int32Array(3) }, targets)).rejects.toThrow(
      /16 ids/,
    );
    await expect(
      stage.forward({ kind: 'tokens', tokens: new Int32Array(16).fill(32) }, targets),
    ).rejects.toThrow(/vocabulary/);
    await expect(stage.forward({ kind: 'tokens', tokens })).rejects.toThrow(/targets/);
    await expect(
      stage.forward({ kind: 'activations', data: new Float32Array(256) }, targets),
    ).rejects.toThrow(/tokens/);
    await expect(stage.importGrads(new Float32Array(5))).rejects.toThrow(/values/);
    expect(() => new CpuStage(config, wholeModel(config), { batch: 1, seq: 9 }, seed)).toThrow(/seq/);
  });
  it('reports NaN/Inf as NonFiniteError, like the GPU stage', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, seed);
    const state = await stage.exportState();
    const head = state.params.length - 1;
    await stage.importState(withParam(state, head, 0, Number.NaN));
    await expect(lossOf(stage)).rejects.toThrow(NonFiniteError);
    await expect(stage.backward(null, 1)).rejects.toThrow(/forward/);
    const grads = new Float32Array(stage.paramCount);
    grads[3] = Number.POSITIVE_INFINITY;
    await stage.importGrads(grads);
    await expect(stage.gradSquaredNorm()).rejects.toThrow(NonFiniteError);

    const [r0] = splitBlocks(config, 2);
    const s0 = new CpuStage(config, r0!, shape, seed);
    await s0.importState(withParam(await s0.exportState(), 0, tokens[0]! * 16, Number.NaN));
    await expect(s0.forward({ kind: 'tokens', tokens })).rejects.toThrow(/diverged/);
  });
});

describe('CpuStage pipeline', () => {
  it('a 2-stage chain gives the loss and gradients of the 1-stage model', async () => {
    const whole = new CpuStage(config, wholeModel(config), shape, seed);
    const [r0, r1] = splitBlocks(config, 2);
    const s0 = new CpuStage(config, r0!, shape, seed);
    const s1 = new CpuStage(config, r1!, shape, seed);
    expect(s0.paramCount + s1.paramCount).toBe(whole.paramCount);

    const wholeLoss = await lossOf(whole);
    await whole.backward(null, 1);
    const acts = await s0.forward({ kind: 'tokens', tokens });
    if (acts.kind !== 'activations') throw new Error('expected activations');
    expect(acts.data.length).toBe(2 * 8 * 16);
    const last = await s1.forward(acts, targets);
    if (last.kind !== 'loss') throw new Error('expected a loss');
    expect(Math.abs(last.loss - wholeLoss)).toBeLessThanOrEqual(1e-5);

    const dacts = await s1.backward(null, 1);
    expect(dacts).not.toBeNull();
    expect(await s0.backward(dacts, 1)).toBeNull();
    const wholeGrads = await whole.exportGrads();
    const g0 = await s0.exportGrads();
    const g1 = await s1.exportGrads();
    const split = new Float32Array(wholeGrads.length);
    split.set(g0, 0);
    split.set(g1, g0.length);
    let worst = 0;
    for (let i = 0; i < split.length; i++) worst = Math.max(worst, Math.abs(split[i]! - wholeGrads[i]!));
    expect(worst).toBeLessThanOrEqual(1e-5);
    expect((await s0.gradSquaredNorm()) + (await s1.gradSquaredNorm())).toBeCloseTo(
      await whole.gradSquaredNorm(),
      8,
    );
  });

  it('a middle stage requires activations and the gradient of its output', async () => {
    const ranges = splitBlocks(config, 2);
    const s1 = new CpuStage(config, ranges[1]!, shape, seed);
    await expect(s1.forward({ kind: 'tokens', tokens }, targets)).rejects.toThrow(/activations/);
    const s0 = new CpuStage(config, ranges[0]!, shape, seed);
    await s0.forward({ kind: 'tokens', tokens });
    await expect(s0.backward(null, 1)).rejects.toThrow(/gradient of its output/);
  });
});

describe('stageParamTensors', () => {
  it('gives each role the tensor of its name, on every stage of a split', () => {
    for (const range of [wholeModel(config), ...splitBlocks(config, 2)]) {
      const specs = stageParams(config, range);
      const byRole = stageParamTensors(
        range,
        specs.map((s) => s.name),
      );
      if (byRole.embed) expect(byRole.embed).toEqual({ wte: 'wte', wpe: 'wpe' });
      byRole.blocks.forEach((b, i) => {
        const p = `blocks.${range.firstBlock + i}.`;
        expect([b.ln1w, b.qkvw, b.attprojb, b.ln2b, b.fcw, b.fcprojw]).toEqual(
          ['ln1.w', 'attn.qkv.w', 'attn.proj.b', 'ln2.b', 'mlp.fc.w', 'mlp.proj.w'].map((n) => p + n),
        );
      });
      if (byRole.head) expect(byRole.head).toEqual({ lnfw: 'lnf.w', lnfb: 'lnf.b', headw: 'head.w' });
      expect(byRole.embed !== null).toBe(range.firstBlock === 0);
      expect(() => stageParamTensors(range, specs.slice(1))).toThrow(/parameter tensors/);
    }
  });
});
