import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { Coordinator, type CoordinatorOptions } from '../../coordinator/coordinator.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import type { StageRange } from '../../gpu/model/config.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { Trainer } from '../../gpu/train/trainer.js';
import { Corpus } from '../../coordinator/data.js';
import { parseRunConfig, type RunConfig } from '../../coordinator/run-config.js';
import { Ed25519Keys, verifyEd25519 } from '../../main/identity/ed25519.js';
import type { PeerTensors } from '../../main/node/peer-tensors.js';
import { NodeRuntime, type NodeRuntimeOptions } from '../../main/node/runtime.js';
import type { EngineKind } from '../../shared/protocol/messages.js';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const corpusPath = resolve(repoRoot, '..', 'shared', 'data', 'tinyshakespeare.txt');

/** A tiny run: 2 layers of width 32, so a step takes milliseconds on the CPU reference. */
export function tinyConfig(overrides: Record<string, unknown> = {}): RunConfig {
  return parseRunConfig({
    runId: 'test-run',
    model: { vocabSize: 256, contextLength: 16, width: 32, heads: 2, layers: 2, mlpRatio: 4 },
    stages: 2,
    microBatch: { batch: 2, seq: 16 },
    microBatchesPerStep: 4,
    steps: 20,
    adamw: { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01 },
    gradClip: 1,
    seed: 7,
    checkpointEvery: 2,
    taskTimeoutMs: 10_000,
    banMs: 0,
    ...overrides,
  });
}

export function tempDir(prefix = 'tributary-net-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const quiet = pino({ level: process.env.TRIBUTARY_TEST_LOG ?? 'silent' });

export function startCoordinator(
  config: RunConfig,
  dataDir: string,
  extra: Partial<CoordinatorOptions> = {},
): Promise<Coordinator> {
  return Coordinator.start({
    config,
    corpus: Corpus.fromFile(corpusPath),
    dataDir,
    keys: Ed25519Keys.generate(),
    verify: verifyEd25519,
    logger: quiet,
    ...extra,
  });
}

export function startNode(
  url: string,
  engine: EngineKind,
  extra: Partial<NodeRuntimeOptions> = {},
): NodeRuntime {
  const node = new NodeRuntime({
    coordinatorUrl: url,
    keys: Ed25519Keys.generate(),
    engine,
    logger: quiet,
    backoffMs: 50,
    maxBackoffMs: 500,
    ...extra,
  });
  node.start();
  return node;
}

/**
 * Tampers with `node`'s peer-to-peer data plane once, as it starts and before its join announces it: how
 * tests make a contributor that lies on the libp2p streams or cannot be reached.
 */
export function tamperPeerTensors(node: NodeRuntime, tamper: (peers: PeerTensors) => void): void {
  const internals = node as unknown as { startPeerTensors(): Promise<PeerTensors> };
  const start = internals.startPeerTensors.bind(node);
  let tampered: Promise<PeerTensors> | null = null;
  internals.startPeerTensors = () =>
    (tampered ??= start().then((peers) => {
      tamper(peers);
      return peers;
    }));
}

/** The single-process trainer for a run config, on one device, fed the run's micro-batches by `trainStep`. */
export function singleProcessTrainer(
  device: GPUDevice,
  config: RunConfig,
  corpus: Corpus,
): Promise<{ trainStep(step: number): Promise<number>; destroy(): void }> {
  return singleProcess(config, corpus, (range) =>
    GpuStage.create(device, config.model, range, config.microBatch, { seed: config.seed }),
  );
}

/** The single-process trainer for a run config on any engine, fed the run's micro-batches by `trainStep`. */
export async function singleProcess(
  config: RunConfig,
  corpus: Corpus,
  makeStage: (range: StageRange) => Promise<StageTrainer> | StageTrainer,
): Promise<{ trainStep(step: number): Promise<number>; destroy(): void }> {
  const trainer = await Trainer.create({
    config: config.model,
    stageCount: config.stages,
    shape: config.microBatch,
    microBatches: config.microBatchesPerStep,
    adamw: config.adamw,
    gradClip: config.gradClip,
    makeStage,
  });
  return {
    trainStep: async (step) => {
      const batches = Array.from({ length: config.microBatchesPerStep }, (_, i) =>
        corpus.microBatch(config.seed, step, i, config.microBatch),
      );
      return (await trainer.step(batches)).loss;
    },
    destroy: () => trainer.destroy(),
  };
}
