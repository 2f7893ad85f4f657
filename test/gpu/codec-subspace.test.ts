import { describe, expect, it } from 'vitest';
import { buildSubspaceBasis, constrainedBlock } from '../../gpu/codec/basis.js';
import { projectParams, projectionTargets, projectRows } from '../../gpu/codec/projection.js';
import { SubspaceKernels } from '../../gpu/codec/subspace-kernels.js';
import {
  ProjectedStage,
  gpuSubspaceOptions,
  type SubspaceConstraint,
} from '../../gpu/codec/subspace-stage.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { splitBlocks, type GptConfig, type MicroBatchShape } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageState, StageTrainer } from '../../gpu/stage/types.js';
import { createSubspaceCodec } from '../../shared/protocol/codec-subspace.js';
import { TensorPack, fileDevice, maxAbsDiff, randomArray, randomTokens } from './harness.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const boundary = { ...shape, width: config.width };
const BT = shape.batch * shape.seq;
const SEED = 11;
const RANK = 4;
const adamw = { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const basis = buildSubspaceBasis(config, SEED, RANK, 'fixed');
const codec = createSubspaceCodec(basis);
const ranges = splitBlocks(config, 2);
const constraint: SubspaceConstraint = { basis, constrained: constrainedBlock(config, 2, 'beforeLastStage') };

const dev = fileDevice();

/** Largest distance of a constrained parameter from span(U) (plus its fixed part). */
function distanceFromSubspace(state: StageState, range = ranges[0]!): number {
  const targets = projectionTargets(range, constraint.constrained);
  expect(targets.length).toBeGreaterThan(0);
  const projected = state.params.map((p) => ({ ...p, data: p.data.slice() }));
  projectParams(projected, targets, basis);
  return Math.max(
    ...targets.map((t) => {
      const i = state.params.findIndex((p) => p.name === t.name);
      return maxAbsDiff(state.params[i]!.data, projected[i]!.data);
    }),
  );
}

describe('subspace kernels against the CPU reference', () => {
  it('encode and decode: forward exact to 1e-6 inside the subspace, backward equal to U U^T g', async () => {
    const tokens = randomTokens(BT, config.vocabSize, 3);
    const inside = randomArray(BT * config.width, 4, 2);
    projectRows(inside, config.width, basis.basis, RANK, null);
    for (let r = 0; r < BT; r++)
      for (let i = 0; i < config.width; i++)
        inside[r * config.width + i]! +=
          basis.fixedToken[tokens[r]! * config.width + i]! +
          basis.fixedPos[(r % shape.seq) * config.width + i]!;
    const grad = randomArray(BT * config.width, 5);
    const kernels = new SubspaceKernels(dev.device, basis);
    const pack = new TensorPack(dev.device, {
      x: inside,
      g: grad,
      tokens,
      cx: BT * RANK,
      cg: BT * RANK,
      x2: BT * config.width,
      g2: BT * config.width,
    });
    const rows = { rows: BT, seq: shape.seq };
    await pack.run(
      kernels.encode({ ...rows, coeffs: pack.ref('cx'), x: pack.ref('x'), tokens: pack.ref('tokens') }),
      kernels.decode({ ...rows, x: pack.ref('x2'), coeffs: pack.ref('cx'), tokens: pack.ref('tokens') }),
      kernels.encode({ ...rows, coeffs: pack.ref('cg'), x: pack.ref('g'), tokens: null }),
      kernels.decode({ ...rows, x: pack.ref('g2'), coeffs: pack.ref('cg'), tokens: null }),
    );
    const cpuForward = codec.encode(inside, boundary, 'forward', tokens);
    expect(maxAbsDiff(await pack.read('cx'), new Float32Array(cpuForward.buffer, 0, BT * RANK))).toBeLessThan(
      1e-6,
    );
    expect(maxAbsDiff(await pack.read('x2'), inside)).toBeLessThan(1e-6);
    const cpuBackward = codec.decode(codec.encode(grad, boundary, 'backward'), boundary, 'backward').data;
    expect(maxAbsDiff(await pack.read('g2'), cpuBackward)).toBeLessThan(1e-6);
    kernels.destroy();
  });

  it('keeps the constrained weights in span(U) after creation and after every step, as the CPU does', async () => {
    const range = ranges[0]!;
    const gpu = await GpuStage.create(dev.device, config, range, shape, {
      seed: SEED,
      kernels: dev.kernels,
      ...gpuSubspaceOptions(dev.device, config, range, constraint),
    });
    const cpu = await ProjectedStage.create(new CpuStage(config, range, shape, SEED), constraint);
    expect(distanceFromSubspace(await gpu.exportState())).toBeLessThan(1e-6);
    for (let step = 0; step < 3; step++) {
      for (const s of [gpu, cpu] as StageTrainer[]) {
        s.zeroGrad();
        await s.forward({ kind: 'tokens', tokens: randomTokens(BT, config.vocabSize, 20 + step) });
        await s.backward(randomArray(BT * config.width, 30 + step), 1);
        await s.step(adamw, 1);
      }
      const state = await gpu.exportState();
      expect(distanceFromSubspace(state)).toBeLessThan(1e-6);
      const cpuState = await cpu.exportState();
      for (const [i, p] of state.params.entries())
        expect(maxAbsDiff(p.data, cpuState.params[i]!.data)).toBeLessThan(1e-3);
    }
    gpu.destroy();
  });

  it('gradients through the compressed boundary match the CPU reference, and the boundary is exact', async () => {
    const tokens = randomTokens(BT, config.vocabSize, 40);
    const targets = randomTokens(BT, config.vocabSize, 41);
    const make = async (engine: 'gpu' | 'cpu'): Promise<StageTrainer[]> =>
      Promise.all(
        ranges.map(async (range) => {
          if (engine === 'cpu')
            return ProjectedStage.create(new CpuStage(config, range, shape, SEED), constraint);
          return GpuStage.create(dev.device, config, range, shape, {
            seed: SEED,
            kernels: dev.kernels,
            ...gpuSubspaceOptions(dev.device, config, range, constraint),
          });
        }),
      );
    const results: { grads: Float32Array[]; loss: number }[] = [];
    for (const engine of ['gpu', 'cpu'] as const) {
      const [s0, s1] = await make(engine);
      const out = await s0!.forward({ kind: 'tokens', tokens });
      if (out.kind !== 'activations') throw new Error('stage 0 returned no activations');
      const sent = codec.encode(out.data, boundary, 'forward', tokens);
      const received = codec.decode(sent, boundary, 'forward');
      expect(maxAbsDiff(received.data, out.data)).toBeLessThan(1e-5);
      const loss = await s1!.forward({ kind: 'activations', data: received.data }, targets);
      const g1 = await s1!.backward(null, 1);
      const g0 = codec.decode(codec.encode(g1!, boundary, 'backward'), boundary, 'backward').data;
      await s0!.backward(g0, 1);
      results.push({
        grads: [await s0!.exportGrads(), await s1!.exportGrads()],
        loss: loss.kind === 'loss' ? loss.loss : NaN,
      });
      s0!.destroy();
      s1!.destroy();
    }
    const [gpu, cpu] = results;
    expect(Math.abs(gpu!.loss - cpu!.loss)).toBeLessThan(1e-4);
    for (const i of [0, 1]) {
      const scale = Math.max(...cpu!.grads[i]!.map(Math.abs));
      expect(maxAbsDiff(gpu!.grads[i]!, cpu!.grads[i]!) / scale).toBeLessThan(1e-3);
    }
  });
});
