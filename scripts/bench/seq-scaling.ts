/**
 * Cost per token against sequence length: `node --import tsx scripts/bench/seq-scaling.ts [steps]` trains a
 * small GPT (width 128, 4 heads, 4 layers) at seq 256 (batch 4) and seq 1024 (batch 1), the same tokens a step,
 * with each attention kind ('scores' keeps the T x T softmax, 'flash' does not; 'flash f16' is mixed precision's
 * f16-operand flash attention, where the adapter offers shader-f16), and prints
 * one JSON line a measurement: ms a step, microseconds a token, and the FLOPs a token (matmuls + attention).
 * With flash attention seq 1024 should cost what seq 256 does plus the extra attention FLOPs.
 */
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import { acquireDevice } from '../../gpu/device/acquire.js';
import type { AttentionKind } from '../../gpu/kernels/flash-attention.js';
import { wholeModel, type GptConfig, type MicroBatchShape, type Precision } from '../../gpu/model/config.js';
import { stageTrainFlops } from '../../gpu/model/flops.js';
import { mulberry32 } from '../../gpu/model/params.js';
import { stageDeviceNeeds } from '../../gpu/engine/stage-layout.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';

const CONFIG: GptConfig = {
  vocabSize: 256,
  contextLength: 1024,
  width: 128,
  heads: 4,
  layers: 4,
  mlpRatio: 4,
};
const SHAPES: MicroBatchShape[] = [
  { batch: 4, seq: 256 },
  { batch: 1, seq: 1024 },
];
const steps = Number(process.argv[2] ?? 4);
const adamw = { learningRate: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

const { device } = await acquireDevice(
  dawnGpu(),
  DRIVER_HINT,
  stageDeviceNeeds(CONFIG, wholeModel(CONFIG), SHAPES[1]!, 'scores'),
);
const rand = mulberry32(1);
const variants: { name: string; attention: AttentionKind; precision: Precision }[] = [
  { name: 'scores', attention: 'scores', precision: 'fp32' },
  { name: 'flash', attention: 'flash', precision: 'fp32' },
  ...(device.features.has('shader-f16')
    ? [{ name: 'flash f16', attention: 'flash' as const, precision: 'mixed' as const }]
    : []),
];
for (const { name: attention, ...options } of variants) {
  const kernels = new KernelSet(device, options);
  for (const shape of SHAPES) {
    const stage = await GpuStage.create(device, CONFIG, wholeModel(CONFIG), shape, { seed: 1, kernels });
    const ids = () => Int32Array.from({ length: shape.batch * shape.seq }, () => Math.floor(rand() * 256));
    const step = async (): Promise<void> => {
      stage.zeroGrad();
      await stage.forward({ kind: 'tokens', tokens: ids() }, ids());
      await stage.backward(null, 1);
      await stage.gradSquaredNorm();
      await stage.step(adamw, 1);
    };
    process.stderr.write(`${attention} seq ${shape.seq}: compiling and warming up\n`);
    for (let i = 0; i < 2; i++) await step();
    const times: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      await step();
      times.push(performance.now() - t0);
      process.stderr.write(
        `${attention} seq ${shape.seq}: step ${i + 1}/${steps} ${times.at(-1)!.toFixed(0)} ms\n`,
      );
    }
    stage.destroy();
    const tokens = shape.batch * shape.seq;
    const best = Math.min(...times);
    console.log(
      JSON.stringify({
        attention,
        seq: shape.seq,
        batch: shape.batch,
        best_ms_per_step: +best.toFixed(1),
        median_ms_per_step: +times.sort((a, b) => a - b)[times.length >> 1]!.toFixed(1),
        best_us_per_token: +((best * 1000) / tokens).toFixed(1),
        train_flops_per_token: stageTrainFlops(CONFIG, wholeModel(CONFIG), shape) / tokens,
      }),
    );
  }
}
device.destroy();
