import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  PRECISIONS,
  splitBlocks,
  validateConfig,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../gpu/model/config.js';
import type { AdamWSettings } from '../gpu/stage/types.js';
import { MAX_SUBSPACE_RANK } from '../gpu/codec/basis.js';
import { openCompression, type CompressionSettings } from '../gpu/codec/run-compression.js';
import type { ActivationCodec, Direction } from '../shared/protocol/codec.js';
import { boundaryTensorSpec } from '../shared/protocol/codec-tensor.js';
import { codecNames } from '../shared/protocol/codec.js';
import {
  adamWSchema,
  constrainedBlocksSchema,
  gptConfigSchema,
  positionPartSchema,
  microBatchShapeSchema,
} from '../shared/protocol/messages.js';
import type { TensorSpec } from '../shared/protocol/wire.js';
import { byteVocabSize } from '../shared/tokenizer.js';

/** A training run as the operator describes it in run.json. Every field has a default for a tiny model. */
export const runConfigSchema = z
  .object({
    runId: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9._-]+$/)
      .default('tributary-tiny'),
    model: gptConfigSchema.default({
      vocabSize: byteVocabSize,
      contextLength: 32,
      width: 32,
      heads: 2,
      layers: 2,
      mlpRatio: 4,
    }),
    stages: z.number().int().min(1).max(64).default(2),
    microBatch: microBatchShapeSchema.default({ batch: 2, seq: 32 }),
    microBatchesPerStep: z.number().int().min(1).max(4096).default(4),
    /** Steps to train; the run stops there. */
    steps: z.number().int().min(1).default(50),
    adamw: adamWSchema.default({ learningRate: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.0 }),
    /** Global gradient-norm clip; 0 turns clipping off. */
    gradClip: z.number().nonnegative().default(1),
    seed: z.number().int().min(0).max(0xffffffff).default(1337),
    /** 'mixed': f16 operands with f32 accumulation and dynamic loss scaling (gpu/model/config.ts Precision). */
    precision: z.enum(PRECISIONS).default('fp32'),
    /**
     * Mixed precision's dynamic loss scale (gpu/train/loss-scaler.ts: a power of two, halved on an overflow
     * with the step replayed, doubled after `growthInterval` clean steps); kept by the coordinator.
     */
    lossScaling: z
      .object({
        initial: z
          .number()
          .positive()
          .max(2 ** 24)
          .refine((v) => 2 ** Math.round(Math.log2(v)) === v, 'must be a power of two')
          .default(2 ** 16),
        growthInterval: z.number().int().min(1).default(200),
      })
      .strict()
      .default({ initial: 2 ** 16, growthInterval: 200 }),
    /**
     * 'relay': activations and gradients go node -> coordinator -> node. 'p2p': they go between the nodes
     * over libp2p (main/node/p2p.ts); the coordinator sees only their summaries.
     */
    dataPlane: z.enum(['relay', 'p2p']).default('relay'),
    /** Write a checkpoint of every stage after every this many steps. */
    checkpointEvery: z.number().int().min(1).default(5),
    /** A task not answered within max(this, 10 x the peer's usual time) drops the peer. */
    taskTimeoutMs: z.number().int().min(100).default(30_000),
    /** Allowance for loading a stage and a peer's first task, which start an engine and compile kernels. */
    warmupTimeoutMs: z.number().int().min(100).default(300_000),
    /** How long a dropped peer may not rejoin. */
    banMs: z.number().int().min(0).default(30_000),
    /**
     * How activations and their gradients cross stage boundaries (shared/protocol/codec*.ts). `rank` is the
     * subspace codec's k (default width/100, at least 1); `constrainedBlocks` which blocks it keeps in span(U).
     */
    compression: z
      .object({
        codec: z.enum(codecNames).default('none'),
        rank: z.number().int().min(1).max(MAX_SUBSPACE_RANK).optional(),
        constrainedBlocks: constrainedBlocksSchema.default('beforeLastStage'),
        positions: positionPartSchema.default('subspace'),
      })
      .strict()
      .default({ codec: 'none', constrainedBlocks: 'beforeLastStage', positions: 'subspace' }),
    /**
     * Held-out validation: the tail `heldOutFraction` of the corpus never trains; `microBatches` fixed
     * micro-batches of it go forward through the pipeline after every `every` steps and after the last.
     * `every` 0 (the default) turns it off and trains on the whole corpus.
     */
    validation: z
      .object({
        every: z.number().int().min(0).default(0),
        microBatches: z.number().int().min(1).max(4096).default(4),
        heldOutFraction: z.number().gt(0).max(0.5).default(0.1),
      })
      .strict()
      .default({ every: 0, microBatches: 4, heldOutFraction: 0.1 }),
    /**
     * Verification of work (coordinator/verification.ts): the share of forward micro-batches a second replica
     * of the stage recomputes, and the relative max-abs difference between the two outputs still taken as
     * agreement (cross-device rounding). 0, the default, turns it off.
     */
    verification: z
      .object({
        fraction: z.number().min(0).max(1).default(0),
        tolerance: z.number().gt(0).max(1).default(1e-3),
      })
      .strict()
      .default({ fraction: 0, tolerance: 1e-3 }),
  })
  .strict();

export type RunConfig = z.infer<typeof runConfigSchema>;

/** Parses and checks a run config; throws an Error that says which field is wrong. */
export function parseRunConfig(raw: unknown): RunConfig {
  const parsed = runConfigSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`run config: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const config = parsed.data;
  validateConfig(config.model);
  splitBlocks(config.model, config.stages);
  if (config.microBatch.seq > config.model.contextLength) {
    throw new Error(
      `run config: microBatch.seq (${config.microBatch.seq}) exceeds model.contextLength (${config.model.contextLength})`,
    );
  }
  if (config.model.vocabSize < byteVocabSize) {
    throw new Error(`run config: model.vocabSize must be at least ${byteVocabSize} for the byte tokenizer`);
  }
  const rank = config.compression.rank;
  if (rank !== undefined && rank > config.model.width) {
    throw new Error(`run config: compression.rank (${rank}) exceeds model.width (${config.model.width})`);
  }
  if (config.compression.codec === 'subspace' && config.model.vocabSize > 1 << 16) {
    throw new Error(
      'run config: the subspace codec sends u16 token ids; model.vocabSize must be at most 65536',
    );
  }
  return config;
}

export function loadRunConfig(path: string | undefined): RunConfig {
  if (path === undefined) return parseRunConfig({});
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read run config ${path}: ${(err as Error).message}`);
  }
  return parseRunConfig(raw);
}

export interface RunShape {
  model: GptConfig;
  shape: MicroBatchShape;
  ranges: StageRange[];
  adamw: AdamWSettings;
  /** The settings every node gets in `welcome`, rank resolved. */
  compression: CompressionSettings;
  /** The boundary codec; the coordinator uses it to check payload lengths, never to decode. */
  codec: ActivationCodec;
}

export function compressionSettings(config: RunConfig): CompressionSettings {
  const { codec, rank, constrainedBlocks, positions } = config.compression;
  return {
    codec,
    rank: rank ?? Math.max(1, Math.round(config.model.width / 100)),
    constrainedBlocks,
    positions,
  };
}

export function runShape(config: RunConfig): RunShape {
  const compression = compressionSettings(config);
  return {
    model: config.model,
    shape: config.microBatch,
    ranges: splitBlocks(config.model, config.stages),
    adamw: config.adamw,
    compression,
    codec: openCompression(compression, config.model, config.seed, config.stages).codec,
  };
}

/** What a boundary tensor of this run looks like on the wire, going forward or backward. */
export function boundarySpec(run: RunShape, direction: Direction): TensorSpec {
  return boundaryTensorSpec(run.codec, { ...run.shape, width: run.model.width }, direction);
}
