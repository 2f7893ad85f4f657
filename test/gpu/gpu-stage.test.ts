import { describe, expect, it } from 'vitest';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import { splitBlocks, wholeModel, type GptConfig, type MicroBatchShape } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import { NonFiniteError } from '../../gpu/stage/checks.js';
import type { StageState, StageTrainer } from '../../gpu/stage/types.js';
import { fileDevice, maxAbsDiff, randomTokens } from './harness.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const adamw = { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const SEED = 7;
const BT = shape.batch * shape.seq;

const dev = fileDevice();

function batch(
  i: number,
  cfg: GptConfig = config,
  shp: MicroBatchShape = shape,
): { tokens: Int32Array; targets: Int32Array } {
  const n = shp.batch * shp.seq;
  return {
    tokens: randomTokens(n, cfg.vocabSize, 100 + i),
    targets: randomTokens(n, cfg.vocabSize, 200 + i),
  };
}

// Head size 9, a vocabulary of 50 and T = 12 (not a multiple of the subgroup size) send attention to its scalar
// shaders and the head's products to the tiled matmul, next to lanes and vec4 kernels elsewhere.
const oddConfig: GptConfig = {
  vocabSize: 50,
  contextLength: 12,
  width: 36,
  heads: 4,
  layers: 1,
  mlpRatio: 4,
};
const oddShape: MicroBatchShape = { batch: 3, seq: 12 };

/** One global step over a chain of stages; returns the mean loss and the gradients before the update. */
async function trainStep(stages: StageTrainer[], micro: { tokens: Int32Array; targets: Int32Array }[]) {
  for (const s of stages) s.zeroGrad();
  let loss = 0;
  for (const mb of micro) {
    let input: Parameters<StageTrainer['forward']>[0] = { kind: 'tokens', tokens: mb.tokens };
    for (const s of stages) {
      const out = await s.forward(input, mb.targets);
      if (out.kind === 'loss') loss += out.loss / micro.length;
      else input = { kind: 'activations', data: out.data };
    }
    let grad: Float32Array | null = null;
    for (let i = stages.length - 1; i >= 0; i--) grad = await stages[i]!.backward(grad, 1 / micro.length);
  }
  const grads = await Promise.all(stages.map((s) => s.exportGrads()));
  let norm2 = 0;
  for (const s of stages) norm2 += await s.gradSquaredNorm();
  const norm = Math.sqrt(norm2);
  const clip = norm > 1 ? 1 / norm : 1;
  for (const s of stages) await s.step(adamw, clip);
  return { loss, grads, norm };
}

/** Per-tensor check: max |gpu - cpu| <= rtol * max |cpu| + atol, reported by name. */
function expectTensorsClose(
  gpu: StageState['params'],
  cpu: StageState['params'],
  rtol: number,
  atol: number,
  what: string,
): void {
  cpu.forEach((c, i) => {
    const g = gpu[i]!;
    expect(g.name).toBe(c.name);
    const scale = c.data.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    const diff = maxAbsDiff(g.data, c.data);
    expect(
      diff,
      `${what} ${c.name}: max diff ${diff.toExponential(2)} vs scale ${scale.toExponential(2)}`,
    ).toBeLessThanOrEqual(rtol * scale + atol);
  });
}

function named(flat: Float32Array, like: StageState['params']): StageState['params'] {
  let offset = 0;
  return like.map((t) => {
    offset += t.data.length;
    return { ...t, data: flat.subarray(offset - t.data.length, offset) };
  });
}

describe('GpuStage against CpuStage', () => {
  // lavapipe runs both kernel families: the lanes kernels it picks itself, and those real GPUs get (with
  // flash attention).
  it.each([
    { model: 'the test model', family: 'lanes', config, shape },
    { model: 'the test model', family: 'workgroup-memory', config, shape },
    { model: 'an odd-shaped model', family: 'lanes', config: oddConfig, shape: oddShape },
  ] as const)(
    'starts from the same weights and tracks losses, gradients and weights over 3 steps ($model, $family kernels)',
    async ({ family, config, shape }) => {
      const kernels = family === 'lanes' ? dev.kernels : dev.gpuKernels;
      expect(kernels.matmul.lanes !== null).toBe(family === 'lanes');
      expect(kernels.attentionKind).toBe(family === 'lanes' ? 'scores' : 'flash');
      const gpu = await GpuStage.create(dev.device, config, wholeModel(config), shape, {
        seed: SEED,
        kernels,
      });
      const cpu = new CpuStage(config, wholeModel(config), shape, SEED);
      try {
        const start = await gpu.exportState();
        expectTensorsClose(start.params, (await cpu.exportState()).params, 0, 0, 'initial');
        for (let step = 0; step < 3; step++) {
          const micro = [batch(2 * step, config, shape), batch(2 * step + 1, config, shape)];
          const g = await trainStep([gpu], micro);
          const c = await trainStep([cpu], micro);
          // Tolerances: losses agree to 1e-5 relative (f32 sums in a different order); each gradient tensor to
          // 1e-3 of its largest entry; norms to 1e-4; weights after AdamW to 2e-4 absolute (AdamW's first steps
          // move every weight by ~lr whatever the gradient's size, so tiny gradient differences can flip signs
          // of near-zero entries: we allow 1/15 of lr).
          expect(Math.abs(g.loss - c.loss) / c.loss, `step ${step} loss ${g.loss} vs ${c.loss}`).toBeLessThan(
            1e-5,
          );
          expect(Math.abs(g.norm - c.norm) / c.norm).toBeLessThan(1e-4);
          const like = (await cpu.exportState()).params;
          expectTensorsClose(
            named(g.grads[0]!, like),
            named(c.grads[0]!, like),
            1e-3,
            1e-7,
            `step ${step} gradient`,
          );
        }
        expectTensorsClose(
          (await gpu.exportState()).params,
          (await cpu.exportState()).params,
          0,
          2e-4,
          'weights after 3 steps',
        );
      } finally {
        gpu.destroy();
      }
    },
  );

  it('splits into two stages that pass activations and input gradients like the CPU', async () => {
    const ranges = splitBlocks(config, 2);
    const gpus = await Promise.all(
      ranges.map((r) => GpuStage.create(dev.device, config, r, shape, { seed: SEED, kernels: dev.kernels })),
    );
    const cpus = ranges.map((r) => new CpuStage(config, r, shape, SEED));
    try {
      const mb = batch(9);
      const ga = await gpus[0]!.forward({ kind: 'tokens', tokens: mb.tokens });
      const ca = await cpus[0]!.forward({ kind: 'tokens', tokens: mb.tokens });
      if (ga.kind !== 'activations' || ca.kind !== 'activations')
        throw new Error('stage 0 must return activations');
      expect(maxAbsDiff(ga.data, ca.data)).toBeLessThan(1e-5);
      const gl = await gpus[1]!.forward({ kind: 'activations', data: ca.data }, mb.targets);
      const cl = await cpus[1]!.forward({ kind: 'activations', data: ca.data }, mb.targets);
      if (gl.kind !== 'loss' || cl.kind !== 'loss') throw new Error('stage 1 must return the loss');
      expect(Math.abs(gl.loss - cl.loss)).toBeLessThan(1e-3 * cl.loss);
      gpus.forEach((s) => s.zeroGrad());
      cpus.forEach((s) => s.zeroGrad());
      const gd = (await gpus[1]!.backward(null, 1))!;
      const cd = (await cpus[1]!.backward(null, 1))!;
      const scale = cd.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      expect(maxAbsDiff(gd, cd)).toBeLessThan(1e-3 * scale);
      expect(await gpus[0]!.backward(cd, 1)).toBeNull();
    } finally {
      gpus.forEach((s) => s.destroy());
    }
  });

  it('reports NaN in the weights as a NonFiniteError instead of training on it', async () => {
    const gpu = await GpuStage.create(dev.device, config, wholeModel(config), shape, {
      seed: SEED,
      kernels: dev.kernels,
    });
    try {
      const state = await gpu.exportState();
      state.params.find((t) => t.name === 'blocks.1.mlp.fc.w')!.data[3] = NaN;
      await gpu.importState(state);
      const mb = batch(0);
      await expect(gpu.forward({ kind: 'tokens', tokens: mb.tokens }, mb.targets)).rejects.toBeInstanceOf(
        NonFiniteError,
      );
    } finally {
      gpu.destroy();
    }
  });

  it('estimates its memory before allocating and refuses a cap it would pass', async () => {
    const bytes = estimateStageMemoryBytes(config, wholeModel(config), shape);
    const params = 4 * (await new CpuStage(config, wholeModel(config), shape, 1).exportGrads()).length;
    expect(bytes).toBeGreaterThan(4 * params);
    await expect(
      GpuStage.create(dev.device, config, wholeModel(config), shape, {
        seed: 1,
        kernels: dev.kernels,
        maxBytes: bytes - 1,
      }),
    ).rejects.toThrow(/over the .* cap/);
  });

  it('allocates everything in create(): the estimate covers it, and steps create no buffers or bind groups', async () => {
    const device = dev.device;
    const created: number[] = [];
    let bindGroups = 0;
    const createBuffer = device.createBuffer.bind(device);
    const createBindGroup = device.createBindGroup.bind(device);
    device.createBuffer = (d) => {
      created.push(d.size);
      return createBuffer(d);
    };
    device.createBindGroup = (d) => {
      bindGroups++;
      return createBindGroup(d);
    };
    try {
      const range = splitBlocks(config, 2)[1]!;
      const stage = await GpuStage.create(device, config, range, shape, { seed: SEED, kernels: dev.kernels });
      const allocated = created.reduce((a, b) => a + b, 0);
      const estimate = estimateStageMemoryBytes(
        config,
        range,
        shape,
        device.limits,
        dev.kernels.attentionKind,
      );
      console.log(
        `stage 1 of 2: allocated ${allocated} bytes in ${created.length} buffers; estimate ${estimate}`,
      );
      expect(estimate).toBeGreaterThanOrEqual(allocated);
      expect(estimate).toBeLessThan(1.5 * allocated);
      created.length = 0;
      bindGroups = 0;
      const mb = batch(3);
      for (let i = 0; i < 2; i++) {
        stage.zeroGrad();
        await stage.forward(
          { kind: 'activations', data: new Float32Array(BT * config.width).fill(0.5) },
          mb.targets,
        );
        await stage.backward(null, 1);
        await stage.gradSquaredNorm();
        await stage.step(adamw, 1);
      }
      expect({ buffers: created.length, bindGroups }).toEqual({ buffers: 0, bindGroups: 0 });
      stage.destroy();
    } finally {
      device.createBuffer = createBuffer;
      device.createBindGroup = createBindGroup;
    }
  });
});
