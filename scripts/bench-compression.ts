/**
 * Compression benchmark: one model, tinyshakespeare, one seed and step count, trained by a coordinator and
 * two nodes (one per stage, CPU engine in worker threads) whose connections run through an 80 Mbit/s, 40 ms
 * shaped link (main/node/link-shaping.ts), once per boundary codec. For each: bytes per token per boundary
 * (forward activation + backward gradient, checked against the coordinator's relay counter), held-out
 * validation loss after the last step, and training tokens/s.
 * `npm run bench:compression` prints a table; `-- --json` prints one JSON object on stdout (progress on stderr).
 * `-- --steps N` changes the step count (default 30); `-- --codecs subspace,none` runs only those;
 * `-- --positions subspace` keeps the position embedding wholly in span(U) instead of splitting off a fixed part.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Coordinator, type StepEvent } from '../coordinator/coordinator.js';
import { Corpus, defaultCorpusPath } from '../coordinator/data.js';
import { parseRunConfig, type RunConfig } from '../coordinator/run-config.js';
import { Ed25519Keys, verifyEd25519 } from '../main/identity/ed25519.js';
import { ShapedProxy, parseLink } from '../main/node/link-shaping.js';
import { NodeRuntime } from '../main/node/runtime.js';
import { codecNames, type CodecName } from '../shared/protocol/codec.js';

const json = process.argv.includes('--json');
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const STEPS = Number(arg('--steps') ?? 30);
const POSITIONS = arg('--positions') ?? 'subspace';
const CODECS = (arg('--codecs')?.split(',') ?? [...codecNames]) as CodecName[];
if (!Number.isInteger(STEPS) || STEPS < 1) throw new Error(`--steps must be a positive integer`);
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

async function measure(codec: CodecName, corpus: Corpus): Promise<Row> {
  const config = runConfig(codec);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-compression-'));
  const coordinator = await Coordinator.start({
    config,
    corpus,
    dataDir: dir,
    keys: Ed25519Keys.generate(),
    verify: verifyEd25519,
    logger: quiet,
  });
  const link = await ShapedProxy.start({ port: coordinator.port }, parseLink(LINK));
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

const corpus = Corpus.fromFile(defaultCorpusPath());
const base = runConfig('none');
const tokensPerStep = base.microBatch.batch * base.microBatch.seq * base.microBatchesPerStep;
progress(
  `bench:compression: width ${base.model.width}, ${base.model.layers} layers, 2 stages (CPU engine), ${STEPS} steps of ${tokensPerStep} tokens, seed ${base.seed}, link ${LINK}, subspace k = 2, positions ${POSITIONS}`,
);
const rows: Row[] = [];
for (const codec of CODECS) {
  const started = performance.now();
  rows.push(await measure(codec, corpus));
  progress(`  ${codec}: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}
const link = parseLink(LINK);
const result = { steps: STEPS, link_mbit: link.bitsPerSecond! / 1e6, rows };
if (json) {
  console.log(JSON.stringify(result));
} else {
  const none = rows[0]!;
  console.log(`\ncodec      bytes/token  vs fp32   val loss  vs fp32   tokens/s  vs fp32`);
  for (const r of rows) {
    console.log(
      `${r.codec.padEnd(10)} ${r.bytes_per_token.toFixed(2).padStart(11)}  ${pct(r.bytes_per_token, none.bytes_per_token)}  ${r.val_loss.toFixed(4).padStart(8)}  ${pct(r.val_loss, none.val_loss)}  ${r.tokens_per_s.toFixed(0).padStart(8)}  ${(r.tokens_per_s / none.tokens_per_s).toFixed(2)}x`,
    );
  }
}

function pct(value: number, base: number): string {
  const d = ((value - base) / base) * 100;
  return `${d >= 0 ? '+' : ''}${d.toFixed(1)}%`.padStart(7);
}
