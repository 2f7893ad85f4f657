import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { GptConfig, MicroBatchShape } from '../../gpu/model/config.js';
import { WindowSampler, byteCorpus } from '../../gpu/train/data.js';
import { Trainer } from '../../gpu/train/trainer.js';
import { testDevice } from '../helpers/gpu.js';

const repoRoot = resolve(import.meta.dirname, '..', '..');
const corpusPath = resolve(repoRoot, '..', 'shared', 'data', 'tinyshakespeare.txt');

/*
 * A 2-block, width-64 byte-level GPT on tinyshakespeare, 8 x 64 tokens a step, AdamW lr 3e-3. It starts at
 * ln(256) = 5.545 (uniform over bytes). Measured on lavapipe: ~2.75 averaged over steps 31-40 (0.4-0.6 s a
 * step on this 2-core machine under load). The bound, 3.0 over those steps, leaves margin for another
 * device's rounding, and sits below the ~3.3 a unigram (letter-frequency) model reaches.
 */
const config: GptConfig = { vocabSize: 256, contextLength: 64, width: 64, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 8, seq: 64 };
const STEPS = 40;
const BOUND = 3.0;

let device: GPUDevice;
beforeAll(async () => {
  ({ device } = await testDevice());
});
afterAll(() => device?.destroy());

describe('training the whole model on tinyshakespeare (WebGPU, two stages)', () => {
  it(`brings the loss from ~5.5 to below ${BOUND} within ${STEPS} steps`, async () => {
    const kernels = new KernelSet(device);
    const trainer = await Trainer.create({
      config,
      stageCount: 2,
      shape,
      microBatches: 1,
      adamw: { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
      gradClip: 1,
      makeStage: (range) => GpuStage.create(device, config, range, shape, { seed: 1, kernels }),
    });
    try {
      const { train } = byteCorpus(readFileSync(corpusPath, 'utf8'));
      const sampler = new WindowSampler(train, shape, 42);
      const losses: number[] = [];
      const started = performance.now();
      for (let i = 0; i < STEPS; i++) losses.push((await trainer.step([sampler.next()])).loss);
      const perStep = (performance.now() - started) / STEPS;
      console.log(`loss curve: ${losses.map((l) => l.toFixed(3)).join(' ')}`);
      console.log(`${perStep.toFixed(0)} ms per step (8x64 tokens, lavapipe)`);
      expect(Math.abs(losses[0]! - Math.log(256))).toBeLessThan(0.1);
      const tail = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
      expect(tail, `mean loss over the last 10 steps`).toBeLessThan(BOUND);
    } finally {
      trainer.destroy();
    }
  }, 120_000);
});
