/**
 * Compression benchmark, two parts, each run once per boundary codec, every connection through an 80 Mbit/s,
 * 40 ms shaped link (main/node/link-shaping.ts) in front of a real coordinator:
 *
 * 1. Training: one small model, tinyshakespeare, one seed and step count, trained by two nodes (one per stage,
 *    CPU engine in worker threads). For each codec: bytes per token per boundary (forward activation +
 *    backward gradient, checked against the coordinator's relay counter), held-out validation loss after the
 *    last step, and training tokens/s. These tokens/s are compute-bound on a small CPU: they say little of
 *    the link.
 * 2. Link: what the link does to a contributor's throughput. The stages' compute is a timed wait of the time
 *    a GPU takes (TimedStage, no CPU; the time from the engine's measured speed on an H200, printed), on a
 *    model as wide and a micro-batch as large as GPT-2 small's, while the boundary tensors (noise of a
 *    residual stream's scale) go through the real codec encode and decode, the real frames, the coordinator's
 *    checks and the shaped link; each node is a process of its own. For each codec: tokens/s, its ratio to
 *    the uncompressed run, and the bytes through the link per token (boundaries, tasks and the per-step
 *    gradient exchange).
 *
 * `npm run bench:compression` prints tables; `-- --json` prints one JSON object on stdout (progress on stderr).
 * `-- --steps N` changes part 1's step count (default 30); `-- --codecs subspace,none` runs only those;
 * `-- --positions fixed` splits a fixed part off the position embedding instead of keeping it in span(U);
 * `-- --link-steps N` (default 2) and `-- --link-micro-batches M` (default 16) size part 2;
 * `-- --skip-training` or `-- --skip-link` runs one part only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Coordinator, type StepEvent } from '../coordinator/coordinator.js';
import { Corpus, defaultCorpusPath } from '../coordinator/data.js';
import { compressionSettings, parseRunConfig, type RunConfig } from '../coordinator/run-config.js';
import { Ed25519Keys, verifyEd25519 } from '../main/identity/ed25519.js';
import { ShapedProxy, parseLink } from '../main/node/link-shaping.js';
import { NodeRuntime } from '../main/node/runtime.js';
import { codecNames, type CodecName } from '../shared/protocol/codec.js';
import { timedNode } from './bench/timed-node-process.js';
import type { BusyInterval } from './bench/timed-stage.js';

const json = process.argv.includes('--json');
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const STEPS = Number(arg('--steps') ?? 30);
const POSITIONS = arg('--positions') ?? 'subspace';
const CODECS = (arg('--codecs')?.split(',') ?? [...codecNames]) as CodecName[];
const LINK_STEPS = Number(arg('--link-steps') ?? 2);
const LINK_MICRO_BATCHES = Number(arg('--link-micro-batches') ?? 16);
for (const [name, n] of [
  ['--steps', STEPS],
  ['--link-steps', LINK_STEPS],
  ['--link-micro-batches', LINK_MICRO_BATCHES],
] as const)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
for (const c of CODECS) if (!codecNames.includes(c)) throw new Error(`--codecs: unknown codec ${c}`);
const LINK = '80mbit,40ms';
const VALIDATION_MICRO_BATCHES = 8;
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const quiet = pino({ level: 'silent' });

function runConfig(codec: CodecName): RunConfig {
  return parseRunConfig({
    runId: `bench-compression-${codec}`,
    model: { vocabSize: 256, contextLength: 64, width: 128, heads: 4, layers: 2, mlpRatio: 4 },
    stages: 2,
    microBatch: { batch: 2, seq: 64 },
    microBatchesPerStep: 4,
    steps: STEPS,
    adamw: { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01 },
    seed: 1337,
    checkpointEvery: 1_000_000,
    banMs: 0,
    compression: { codec, rank: 2, positions: POSITIONS },
    validation: { every: STEPS, microBatches: VALIDATION_MICRO_BATCHES, heldOutFraction: 0.1 },
  });
}

interface Row {
  codec: CodecName;
  bytes_per_token: number;
  val_loss: number;
  tokens_per_s: number;
}

/** A coordinator in a fresh data directory, reached through the 80 Mbit/s, 40 ms shaped link. */
async function shapedCoordinator(
  config: RunConfig,
  corpus: Corpus,
  dirPrefix: string,
): Promise<{ dir: string; coordinator: Coordinator; link: ShapedProxy }> {
  const dir = mkdtempSync(join(tmpdir(), dirPrefix));
  const coordinator = await Coordinator.start({
    config,
    corpus,
    dataDir: dir,
    keys: Ed25519Keys.generate(),
    verify: verifyEd25519,
    logger: quiet,
  });
  const link = await ShapedProxy.start({ port: coordinator.port }, parseLink(LINK));
  return { dir, coordinator, link };
}

async function measure(codec: CodecName, corpus: Corpus): Promise<Row> {
  const config = runConfig(codec);
  const { dir, coordinator, link } = await shapedCoordinator(config, corpus, 'tributary-bench-compression-');
  const nodes = [0, 1].map(() => {
    const node = new NodeRuntime({
      coordinatorUrl: `ws://127.0.0.1:${link.port}`,
      keys: Ed25519Keys.generate(),
      engine: 'cpu',
      logger: quiet,
    });
    node.start();
    return node;
  });
  coordinator.on('step', (e: StepEvent) => {
    if (e.step % 10 === 0 || e.step === STEPS)
      progress(
        `  ${codec}: step ${e.step}/${STEPS} loss ${e.loss.toFixed(3)} ${e.tokensPerSecond.toFixed(0)} tok/s`,
      );
  });
  try {
    await coordinator.finished;
    const status = coordinator.status();
    if (!status.validation) throw new Error(`${codec}: no validation loss at the end`);
    const { batch, seq } = config.microBatch;
    const boundary = { batch, seq, width: config.model.width };
    const codecOf = coordinator.run.codec;
    const forward = codecOf.payloadBytes(boundary, 'forward');
    const backward = codecOf.payloadBytes(boundary, 'backward');
    // Every training micro-batch crosses the one boundary forward and back; validation only forward.
    const expected =
      STEPS * config.microBatchesPerStep * (forward + backward) + VALIDATION_MICRO_BATCHES * forward;
    if (status.relayedBytes !== expected)
      throw new Error(`${codec}: relayed ${status.relayedBytes} bytes, the codec accounts for ${expected}`);
    return {
      codec,
      bytes_per_token: (forward + backward) / (batch * seq),
      val_loss: status.validation.loss,
      tokens_per_s: status.tokensPerSecond,
    };
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await coordinator.close();
    await link.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/*
 * Part 2's stage compute, from a measurement: the engine trained GPT-2 small's shape (width 768, 12 layers,
 * byte vocabulary, batch 8 x seq 256) at 14,320 tokens/s on an NVIDIA H200 (../shared/gpu-device/README.md,
 * with the dispatch cap raised as the engine now sizes it). A micro-batch of 2,048 tokens then takes 143 ms
 * for 12 blocks, 11.9 ms a block, a third of it forward and two thirds backward (the optimizer step, once a
 * step, is left out).
 */
const H200 = { tokensPerSecond: 14_320, layers: 12 };
const LINK_MODEL = { vocabSize: 256, contextLength: 256, width: 768, heads: 12, layers: 2, mlpRatio: 4 };
const LINK_MICRO_BATCH = { batch: 8, seq: 256 };
const LINK_TOKENS = LINK_MICRO_BATCH.batch * LINK_MICRO_BATCH.seq;
const BLOCK_MS = ((LINK_TOKENS / H200.tokensPerSecond) * 1000) / H200.layers;
const BLOCKS_PER_STAGE = LINK_MODEL.layers / 2;
const FORWARD_MS = (BLOCK_MS * BLOCKS_PER_STAGE) / 3;
const BACKWARD_MS = (2 * BLOCK_MS * BLOCKS_PER_STAGE) / 3;
const LINK_WARMUP = 1;

interface LinkRow {
  codec: CodecName;
  /** End to end: the micro-batches through the pipeline, then the gradient exchange and the optimizer step. */
  tokens_per_s: number;
  /**
   * The pipeline alone, what a boundary codec acts on: tokens per span from the first forward's start to the
   * last backward's end of a step, as the nodes recorded them.
   */
  pipeline_tokens_per_s: number;
  /** Seconds a step spends outside that span: mostly each node's gradient up and the summed one back down. */
  exchange_s_per_step: number;
  /** Every byte through the shaped link per trained token: both boundaries, tasks, the gradient exchange. */
  link_bytes_per_token: number;
  /** The boundary tensors' share of that: forward + backward payload, through the coordinator (two hops). */
  boundary_bytes_per_token: number;
}

function linkConfig(codec: CodecName): RunConfig {
  return parseRunConfig({
    runId: `bench-compression-link-${codec}`,
    model: LINK_MODEL,
    stages: 2,
    microBatch: LINK_MICRO_BATCH,
    microBatchesPerStep: LINK_MICRO_BATCHES,
    // One step more than measured: the last step of a run uploads a checkpoint, which is not the link's
    // steady state; the run is closed before it.
    steps: LINK_WARMUP + LINK_STEPS + 1,
    seed: 1337,
    checkpointEvery: 1_000_000,
    // A fp32 micro-batch's tensor takes 0.63 s a hop at 80 Mbit/s, and many queue on one link.
    taskTimeoutMs: 600_000,
    banMs: 0,
    compression: { codec },
  });
}

async function measureLink(codec: CodecName, corpus: Corpus): Promise<LinkRow> {
  const config = linkConfig(codec);
  const { dir, coordinator, link } = await shapedCoordinator(
    config,
    corpus,
    'tributary-bench-compression-link-',
  );
  const url = `ws://127.0.0.1:${link.port}`;
  const nodes = [0, 1].map(() => timedNode(url, FORWARD_MS, BACKWARD_MS, { values: 'noise' }));
  // Wall-clock (epoch) milliseconds, as the node processes report their forwards and backwards.
  const stepEnds: number[] = [];
  const bytesAt: number[] = [];
  const wanted = LINK_WARMUP + LINK_STEPS;
  const started = Date.now();
  const measured = new Promise<void>((resolve) =>
    coordinator.on('step', (e: StepEvent) => {
      stepEnds.push(Date.now());
      bytesAt.push(link.bytes);
      progress(`  ${codec}: step ${e.step}/${wanted} at ${((Date.now() - started) / 1000).toFixed(1)} s`);
      if (stepEnds.length === wanted) resolve();
    }),
  );
  let busy: BusyInterval[] = [];
  try {
    await measured;
  } finally {
    busy = (await Promise.all(nodes.map((n) => n.stop()))).flatMap((r) => r.busy);
    await coordinator.close();
    await link.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const tokens = LINK_STEPS * LINK_MICRO_BATCHES * LINK_TOKENS;
  const boundary = { ...LINK_MICRO_BATCH, width: LINK_MODEL.width };
  const c = coordinator.run.codec;
  const elapsed = stepEnds[wanted - 1]! - stepEnds[LINK_WARMUP - 1]!;
  let pipelineMs = 0;
  for (let i = LINK_WARMUP; i < wanted; i++) {
    const inStep = busy.filter((b) => b.start >= stepEnds[i - 1]! && b.end <= stepEnds[i]!);
    pipelineMs += Math.max(...inStep.map((b) => b.end)) - Math.min(...inStep.map((b) => b.start));
  }
  return {
    codec,
    tokens_per_s: (tokens * 1000) / elapsed,
    pipeline_tokens_per_s: (tokens * 1000) / pipelineMs,
    exchange_s_per_step: (elapsed - pipelineMs) / 1000 / LINK_STEPS,
    link_bytes_per_token: (bytesAt[wanted - 1]! - bytesAt[LINK_WARMUP - 1]!) / tokens,
    boundary_bytes_per_token:
      (2 * (c.payloadBytes(boundary, 'forward') + c.payloadBytes(boundary, 'backward'))) / LINK_TOKENS,
  };
}

const corpus = Corpus.fromFile(defaultCorpusPath());
const linkShape = parseLink(LINK);
const rows: Row[] = [];
if (!process.argv.includes('--skip-training')) {
  const base = runConfig('none');
  const tokensPerStep = base.microBatch.batch * base.microBatch.seq * base.microBatchesPerStep;
  progress(
    `bench:compression, training: width ${base.model.width}, ${base.model.layers} layers, 2 stages (CPU engine), ${STEPS} steps of ${tokensPerStep} tokens, seed ${base.seed}, link ${LINK}, subspace k = 2, positions ${POSITIONS}`,
  );
  for (const codec of CODECS) {
    const started = performance.now();
    rows.push(await measure(codec, corpus));
    progress(`  ${codec}: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}

const linkSetup = {
  model: LINK_MODEL,
  micro_batch: LINK_MICRO_BATCH,
  micro_batches_per_step: LINK_MICRO_BATCHES,
  forward_ms: FORWARD_MS,
  backward_ms: BACKWARD_MS,
  subspace_rank: openRank(),
  warmup_steps: LINK_WARMUP,
  timed_steps: LINK_STEPS,
};
const linkRows: LinkRow[] = [];
if (!process.argv.includes('--skip-link')) {
  progress(
    `bench:compression, link: ${describeLinkModel()}; stage compute a timed wait of ${FORWARD_MS.toFixed(1)} ms forward + ${BACKWARD_MS.toFixed(1)} ms backward a micro-batch (${BLOCKS_PER_STAGE} GPT-2 small block(s) at the engine's measured H200 speed, ${H200.tokensPerSecond} tokens/s for 12 layers); ${LINK_WARMUP} warm-up and ${LINK_STEPS} timed steps`,
  );
  for (const codec of CODECS) linkRows.push(await measureLink(codec, corpus));
}

const result = {
  steps: STEPS,
  link_mbit: linkShape.bitsPerSecond! / 1e6,
  rows,
  link_latency_ms: linkShape.latencyMs,
  link_bound: {
    ...linkSetup,
    rows: linkRows.map((r) => ({
      ...r,
      vs_none: ratioToNone(r, 'tokens_per_s'),
      pipeline_vs_none: ratioToNone(r, 'pipeline_tokens_per_s'),
    })),
  },
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  const none = rows.find((r) => r.codec === 'none');
  if (rows.length > 0) {
    console.log(
      `\nTraining (CPU engine, compute-bound on this machine: its tokens/s follow the machine's load, not the codec)`,
    );
    console.log(`codec      bytes/token  vs fp32   val loss  vs fp32   tokens/s  vs fp32`);
    for (const r of rows) {
      console.log(
        `${r.codec.padEnd(10)} ${r.bytes_per_token.toFixed(2).padStart(11)}  ${none ? pct(r.bytes_per_token, none.bytes_per_token) : '      -'}  ${r.val_loss.toFixed(4).padStart(8)}  ${none ? pct(r.val_loss, none.val_loss) : '      -'}  ${r.tokens_per_s.toFixed(0).padStart(8)}  ${none ? `${(r.tokens_per_s / none.tokens_per_s).toFixed(2)}x` : '-'}`,
      );
    }
  }
  if (linkRows.length > 0) {
    console.log(`\nLink (${LINK}): ${describeLinkModel()}`);
    console.log(
      `stage compute: a timed wait of ${FORWARD_MS.toFixed(1)} + ${BACKWARD_MS.toFixed(1)} ms a micro-batch (the engine's measured H200 speed); codecs, frames and link real`,
    );
    console.log(
      `codec      tokens/s  vs fp32   pipeline tokens/s  vs fp32   exchange s/step  link B/token  boundary B/token`,
    );
    const times = (x: number | null): string => (x === null ? '-' : `${x.toFixed(2)}x`).padStart(7);
    for (const r of linkRows) {
      console.log(
        `${r.codec.padEnd(10)} ${r.tokens_per_s.toFixed(0).padStart(8)}  ${times(ratioToNone(r, 'tokens_per_s'))}  ${r.pipeline_tokens_per_s.toFixed(0).padStart(17)}  ${times(ratioToNone(r, 'pipeline_tokens_per_s'))}  ${r.exchange_s_per_step.toFixed(1).padStart(15)}  ${r.link_bytes_per_token.toFixed(0).padStart(12)}  ${r.boundary_bytes_per_token.toFixed(0).padStart(16)}`,
      );
    }
  }
}

function ratioToNone(r: LinkRow, key: 'tokens_per_s' | 'pipeline_tokens_per_s'): number | null {
  const none = linkRows.find((x) => x.codec === 'none');
  return none ? r[key] / none[key] : null;
}

function describeLinkModel(): string {
  const m = LINK_MODEL;
  return (
    `width ${m.width} (GPT-2 small's), ${m.layers} layers (one block a stage), 2 stages, ${LINK_MICRO_BATCHES} micro-batches of ` +
    `${LINK_MICRO_BATCH.batch} x ${LINK_MICRO_BATCH.seq} tokens a step; a fp32 boundary tensor is ` +
    `${((LINK_TOKENS * m.width * 4) / 2 ** 20).toFixed(1)} MiB, ${(((LINK_TOKENS * m.width * 32) / linkShape.bitsPerSecond!) * 1000).toFixed(0)} ms a hop at ${linkShape.bitsPerSecond! / 1e6} Mbit/s, against ${(FORWARD_MS + BACKWARD_MS).toFixed(1)} ms of compute; subspace k = ${openRank()}`
  );
}

function openRank(): number {
  return compressionSettings(linkConfig('subspace')).rank;
}

function pct(value: number, base: number): string {
  const d = ((value - base) / base) * 100;
  return `${d >= 0 ? '+' : ''}${d.toFixed(1)}%`.padStart(7);
}
