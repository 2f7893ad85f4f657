import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { safetensorsToStageState, stageStateToSafetensors } from '../../gpu/checkpoint/stage-checkpoint.js';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { AdamWSettings } from '../../gpu/stage/types.js';
import { encode } from '../../shared/tokenizer.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const corpus = encode(
  readFileSync(path.resolve(repoRoot, '..', 'shared', 'data', 'tinyshakespeare.txt'), 'utf8').slice(
    0,
    20_000,
  ),
);

const config: GptConfig = { vocabSize: 256, contextLength: 32, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape = { batch: 4, seq: 32 };
const settings: AdamWSettings = { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const span = shape.batch * shape.seq;

/** Batch k: consecutive windows of the training part of the slice (the last 4,000 bytes are held out). */
function batch(k: number, start = 0): { tokens: Int32Array; targets: Int32Array } {
  const at = start + ((k * span) % (corpus.length - 4_000 - span - 1));
  return { tokens: corpus.slice(at, at + span), targets: corpus.slice(at + 1, at + span + 1) };
}
const heldOut = batch(0, corpus.length - 4_000);

async function evalLoss(stage: CpuStage, b = heldOut): Promise<number> {
  const r = await stage.forward({ kind: 'tokens', tokens: b.tokens }, b.targets);
  if (r.kind !== 'loss') throw new Error('expected a loss');
  return r.loss;
}

/** One global step of two micro-batches with global-norm clipping at 1. */
async function trainStep(stage: CpuStage, k: number): Promise<number> {
  stage.zeroGrad();
  let loss = 0;
  for (const micro of [2 * k, 2 * k + 1]) {
    loss += await evalLoss(stage, batch(micro));
    await stage.backward(null, 0.5);
  }
  const norm = Math.sqrt(await stage.gradSquaredNorm());
  await stage.step(settings, norm > 1 ? 1 / norm : 1);
  return loss / 2;
}

describe('CpuStage training', () => {
  it('lowers the held-out loss on tinyshakespeare', async () => {
    const stage = new CpuStage(config, wholeModel(config), shape, 1);
    const before = await evalLoss(stage);
    expect(before).toBeGreaterThan(5);
    for (let k = 0; k < 30; k++) await trainStep(stage, k);
    const after = await evalLoss(stage);
    expect(after).toBeLessThan(before - 1.5);
  });

  it('resumes bit-identically from exported state and from a safetensors checkpoint', async () => {
    const a = new CpuStage(config, wholeModel(config), shape, 2);
    for (let k = 0; k < 2; k++) await trainStep(a, k);
    const saved = await a.exportState();
    expect(saved.step).toBe(2);

    const direct = new CpuStage(config, wholeModel(config), shape, 99);
    await direct.importState(saved);
    expect(await direct.exportState()).toEqual(saved);

    const range = wholeModel(config);
    const file = stageStateToSafetensors(saved, { config, range, extra: { run: 'r1' } });
    const loaded = safetensorsToStageState(file, { config, range });
    expect(loaded.meta.extra).toEqual({ run: 'r1' });
    const fromFile = new CpuStage(config, range, shape, 98);
    await fromFile.importState(loaded.state);

    const lossesA: number[] = [];
    const lossesB: number[] = [];
    const lossesC: number[] = [];
    for (let k = 2; k < 4; k++) {
      lossesA.push(await trainStep(a, k));
      lossesB.push(await trainStep(direct, k));
      lossesC.push(await trainStep(fromFile, k));
    }
    expect(lossesB).toEqual(lossesA);
    expect(lossesC).toEqual(lossesA);
    const end = await a.exportState();
    expect(await direct.exportState()).toEqual(end);
    expect(await fromFile.exportState()).toEqual(end);
  });
});
