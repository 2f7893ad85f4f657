/**
 * Pipeline benchmark, all on 127.0.0.1: a real coordinator and real nodes (WebSockets, frames, WireReader
 * checks), one replica per stage, S in {1, 2, 4} stages and M in {1, S, 2S} micro-batches per step, over an
 * unshaped link and an 80 Mbit/s, 40 ms one-way link (a ShapedProxy in front of the coordinator and, when
 * tensors go peer to peer, one in front of each node's libp2p host). The stages'
 * compute is a timed wait (TimedStage: no CPU), so four stages on two cores show the schedule; one short run
 * uses the real CPU engine for comparison. For each run: tokens/s, the bubble each stage measured (idle share
 * of the step's pipeline span), the ideal bubble (S-1)/(M+S-1), bytes through the coordinator and between
 * peers per token, and the single-process trainer on the same model and stages.
 * `npm run bench:pipeline` prints a table; `-- --json` prints `{"rows":[...]}` on stdout (progress on stderr).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Corpus } from '../coordinator/data.js';
import { parseRunConfig, type RunConfig } from '../coordinator/run-config.js';
import { CpuStage } from '../gpu/reference/cpu-stage.js';
import type { StageTrainer } from '../gpu/stage/types.js';
import { Ed25519Keys } from '../main/identity/ed25519.js';
import { WorkerStage } from '../main/node/engine-host.js';
import { ShapedProxy, describeLink, parseLink, type LinkShape } from '../main/node/link-shaping.js';
import { NodeRuntime } from '../main/node/runtime.js';
import { corpusPath, singleProcess, startCoordinator } from '../test/network/helpers.js';
import { timedNode } from './bench/timed-node-process.js';
import { TimedStage, type BusyInterval } from './bench/timed-stage.js';

const json = process.argv.includes('--json');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const quiet = pino({ level: 'silent' });

const FORWARD_MS = 20;
const BACKWARD_MS = 40;
const WARMUP_STEPS = 1;
const TIMED_STEPS = 4;
const LINKS = ['none', '80mbit,40ms'];
const corpus = Corpus.fromFile(corpusPath);

interface Row {
  stages: number;
  micro_batches: number;
  link: string;
  /** 'relay': tensors through the coordinator; 'p2p': between the nodes over libp2p. */
  data_plane: 'relay' | 'p2p';
  engine: string;
  tokens_per_s: number;
  single_tokens_per_s: number;
  /** What the measured stage times allow: tokens per (M + S - 1) x the slowest stage's forward + backward. */
  allowed_tokens_per_s: number;
  bubble: number;
  bubble_per_stage: number[];
  ideal_bubble: number;
  coordinator_bytes_per_token: number;
  peer_bytes_per_token: number;
}

function runConfig(
  stages: number,
  microBatches: number,
  real: boolean,
  dataPlane: 'relay' | 'p2p',
): RunConfig {
  return parseRunConfig({
    runId: `bench-pipeline-${stages}x${microBatches}`,
    model: real
      ? { vocabSize: 256, contextLength: 32, width: 64, heads: 4, layers: 4, mlpRatio: 4 }
      : { vocabSize: 256, contextLength: 128, width: 64, heads: 4, layers: 4, mlpRatio: 4 },
    stages,
    // 256 KiB of activations per micro-batch (8 x 128 x 64 f32) next to under 1 MB of parameters per stage.
    microBatch: real ? { batch: 4, seq: 32 } : { batch: 8, seq: 128 },
    microBatchesPerStep: microBatches,
    steps: WARMUP_STEPS + TIMED_STEPS,
    checkpointEvery: 1000,
    taskTimeoutMs: 60_000,
    banMs: 0,
    dataPlane,
  });
}

/** Records each forward and backward call's span on a stage (for the real engine's bubble). */
function recordBusy(stage: StageTrainer, busy: BusyInterval[]): StageTrainer {
  const wrap =
    <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      const start = Date.now();
      try {
        return await f.apply(stage, a);
      } finally {
        busy.push({ start, end: Date.now() });
      }
    };
  stage.forward = wrap(stage.forward);
  stage.backward = wrap(stage.backward);
  return stage;
}

/** Idle share of each stage within each timed step's pipeline span (first compute start to last end). */
function bubbles(busyByStage: BusyInterval[][], stepEnds: number[]): number[] {
  const perStage = busyByStage.map(() => 0);
  for (let i = WARMUP_STEPS; i < stepEnds.length; i++) {
    const inStep = busyByStage.map((b) =>
      b.filter((x) => x.start >= stepEnds[i - 1]! && x.end <= stepEnds[i]!),
    );
    const all = inStep.flat();
    const span = Math.max(...all.map((x) => x.end)) - Math.min(...all.map((x) => x.start));
    inStep.forEach((b, s) => (perStage[s]! += 1 - b.reduce((t, x) => t + x.end - x.start, 0) / span));
  }
  return perStage.map((b) => b / (stepEnds.length - WARMUP_STEPS));
}

/** Mean forward+backward time of one micro-batch on the slowest stage, from the recorded calls. */
function unitMs(busyByStage: BusyInterval[][], microBatchesSeen: number): number {
  return Math.max(...busyByStage.map((b) => b.reduce((t, x) => t + x.end - x.start, 0) / microBatchesSeen));
}

async function pipeline(
  stages: number,
  microBatches: number,
  linkSpec: string,
  real: boolean,
  dataPlane: 'relay' | 'p2p' = 'relay',
): Promise<Row> {
  const config = runConfig(stages, microBatches, real, dataPlane);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-pipeline-'));
  const link: LinkShape = parseLink(linkSpec);
  const coordinator = await startCoordinator(config, dir);
  // Unshaped, nodes connect straight to the coordinator (a proxy would add a hop a real network lacks); the
  // coordinator counts the bytes on its own sockets either way.
  const proxy = linkSpec === 'none' ? null : await ShapedProxy.start({ port: coordinator.port }, link);
  const busyByStage: BusyInterval[][] = Array.from({ length: stages }, () => []);
  const url = `ws://127.0.0.1:${proxy?.port ?? coordinator.port}`;
  // Timed nodes run in processes of their own (real nodes: their own event loops, sockets and frames); the
  // real engine's nodes run here, each engine in its worker thread.
  const children = real
    ? []
    : Array.from({ length: stages }, () => timedNode(url, FORWARD_MS, BACKWARD_MS, { p2pLink: linkSpec }));
  const nodes = real
    ? Array.from({ length: stages }, () => {
        const node = new NodeRuntime({
          coordinatorUrl: url,
          keys: Ed25519Keys.generate(),
          engine: 'cpu',
          logger: quiet,
          createStage: async (engine, spec) =>
            recordBusy(await WorkerStage.create(engine, spec), busyByStage[spec.range.index]!),
        });
        node.start();
        return node;
      })
    : [];
  const stepEnds: number[] = [];
  const bytesAt: number[] = [];
  coordinator.on('step', () => {
    stepEnds.push(Date.now());
    bytesAt.push(coordinator.wireBytes);
  });
  await coordinator.finished;
  await Promise.all(nodes.map((n) => n.stop()));
  let peerBytes = nodes.reduce((t, n) => t + (n.status.peerBytes ?? 0), 0);
  for (const report of await Promise.all(children.map((c) => c.stop()))) {
    for (const b of report.busy) busyByStage[b.stage]!.push(b);
    peerBytes += report.peerBytes;
  }
  await coordinator.close();
  await proxy?.close();
  rmSync(dir, { recursive: true, force: true });
  const started = Math.min(...busyByStage.flat().map((b) => b.start));

  const tokensPerStep = config.microBatch.batch * config.microBatch.seq * microBatches;
  const timedMs = stepEnds.at(-1)! - stepEnds[WARMUP_STEPS - 1]!;
  const timedTokens = tokensPerStep * TIMED_STEPS;
  const perStage = bubbles(busyByStage, [started, ...stepEnds]);
  const unit = unitMs(
    busyByStage.map((b) => b.filter((x) => x.start >= stepEnds[WARMUP_STEPS - 1]!)),
    microBatches * TIMED_STEPS,
  );
  return {
    stages,
    micro_batches: microBatches,
    link: linkSpec === 'none' ? 'unshaped' : linkSpec,
    data_plane: dataPlane,
    engine: real ? 'cpu' : `timed ${FORWARD_MS}+${BACKWARD_MS} ms`,
    tokens_per_s: (timedTokens * 1000) / timedMs,
    single_tokens_per_s: await singleProcessTokensPerSecond(config, real),
    allowed_tokens_per_s: (tokensPerStep * 1000) / ((microBatches + stages - 1) * unit),
    bubble: perStage.reduce((a, b) => a + b, 0) / stages,
    bubble_per_stage: perStage,
    ideal_bubble: (stages - 1) / (microBatches + stages - 1),
    coordinator_bytes_per_token: (bytesAt.at(-1)! - bytesAt[WARMUP_STEPS - 1]!) / timedTokens,
    // Counted by the nodes over the whole run (warm-up step included, which moves as many bytes as any).
    peer_bytes_per_token: peerBytes / (tokensPerStep * (WARMUP_STEPS + TIMED_STEPS)),
  };
}

/** The single-process trainer on the same model, stages and micro-batches, in this process. */
async function singleProcessTokensPerSecond(config: RunConfig, real: boolean): Promise<number> {
  const trainer = await singleProcess(config, corpus, (range) =>
    real
      ? new CpuStage(config.model, range, config.microBatch, config.seed)
      : new TimedStage(config.model, range, config.microBatch, FORWARD_MS, BACKWARD_MS),
  );
  let started = 0;
  for (let step = 0; step < WARMUP_STEPS + TIMED_STEPS; step++) {
    if (step === WARMUP_STEPS) started = performance.now();
    await trainer.trainStep(step);
  }
  const ms = performance.now() - started;
  trainer.destroy();
  const { batch, seq } = config.microBatch;
  return (batch * seq * config.microBatchesPerStep * TIMED_STEPS * 1000) / ms;
}

const rows: Row[] = [];
progress(
  `bench:pipeline: stage compute is a timed wait of ${FORWARD_MS} ms forward and ${BACKWARD_MS} ms backward per micro-batch (no CPU used); ` +
    `one replica per stage; ${WARMUP_STEPS} warm-up and ${TIMED_STEPS} timed steps per run`,
);
for (const linkSpec of LINKS) {
  for (const stages of [1, 2, 4]) {
    for (const microBatches of [...new Set([1, stages, 2 * stages])]) {
      progress(`  S=${stages} M=${microBatches} link ${describeLink(parseLink(linkSpec))} ...`);
      rows.push(await pipeline(stages, microBatches, linkSpec, false));
    }
  }
}
for (const linkSpec of LINKS) {
  for (const stages of [2, 4]) {
    for (const microBatches of [stages, 2 * stages]) {
      progress(
        `  S=${stages} M=${microBatches} link ${describeLink(parseLink(linkSpec))}, tensors peer to peer over libp2p ...`,
      );
      rows.push(await pipeline(stages, microBatches, linkSpec, false, 'p2p'));
    }
  }
}
progress('  real CPU engine: S=2 M=4 unshaped ...');
rows.push(await pipeline(2, 4, 'none', true));
rows.push(await pipeline(2, 4, 'none', true, 'p2p'));

if (json) {
  process.stdout.write(`${JSON.stringify({ rows })}\n`);
} else {
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  console.log(
    `\nstage compute: timed wait, ${FORWARD_MS} ms forward + ${BACKWARD_MS} ms backward per micro-batch per stage (no CPU); last row: real CPU engine\n`,
  );
  console.log(
    'S  M   link          data   engine            tok/s   allowed  single   bubble (per stage)            ideal   coord B/tok  peer B/tok',
  );
  for (const r of rows) {
    console.log(
      `${String(r.stages).padEnd(2)} ${String(r.micro_batches).padEnd(3)} ${r.link.padEnd(13)} ${r.data_plane.padEnd(6)} ${r.engine.padEnd(17)} ${r.tokens_per_s.toFixed(0).padStart(6)}  ${r.allowed_tokens_per_s.toFixed(0).padStart(7)}  ${r.single_tokens_per_s.toFixed(0).padStart(6)}   ${pct(r.bubble).padStart(6)} (${r.bubble_per_stage.map(pct).join(' ')})`.padEnd(
        117,
      ) +
        ` ${pct(r.ideal_bubble).padStart(6)}  ${r.coordinator_bytes_per_token.toFixed(0).padStart(10)}  ${r.peer_bytes_per_token.toFixed(0).padStart(9)}`,
    );
  }
}
