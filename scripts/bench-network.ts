/**
 * Network benchmark, all on 127.0.0.1 with the GPU engine on dawn.node:
 *  - tokens/s of the single-process trainer and of a 2 stages x 2 replicas run (coordinator + 4 nodes with
 *    engine worker threads) on the same model, micro-batches and device;
 *  - relay throughput: activation frames decoded, validated and re-encoded by the protocol layer between
 *    two real WebSocket connections (the coordinator's relay path);
 *  - control-message round-trip latency (ping/pong) with 500 authenticated lightweight nodes connected,
 *    each sending pings in bursts.
 * `npm run bench:network` prints a table; `-- --json` prints one JSON object on stdout (progress on stderr).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { Coordinator, type StepEvent } from '../coordinator/coordinator.js';
import { Corpus, defaultCorpusPath } from '../coordinator/data.js';
import { parseRunConfig } from '../coordinator/run-config.js';
import { acquireDevice } from '../gpu/device/acquire.js';
import { DRIVER_HINT, dawnGpu } from '../main/gpu-host/dawn.js';
import { Ed25519Keys, verifyEd25519 } from '../main/identity/ed25519.js';
import { NodeRuntime } from '../main/node/runtime.js';
import { authChallengeBytes } from '../shared/protocol/auth.js';
import { Channel } from '../shared/protocol/channel.js';
import {
  coordinatorMessageSchema,
  nodeMessageSchema,
  type CoordinatorMessage,
  type NodeMessage,
} from '../shared/protocol/messages.js';
import { WireReader, encodeMessage } from '../shared/protocol/wire.js';
import { singleProcessTrainer } from '../test/network/helpers.js';

const json = process.argv.includes('--json');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const quiet = pino({ level: 'silent' });

const WARMUP_STEPS = 2;
const TIMED_STEPS = 6;
const LIGHT_NODES = 500;
const PING_ROUNDS = 10;
const config = parseRunConfig({
  runId: 'bench',
  model: { vocabSize: 256, contextLength: 64, width: 64, heads: 4, layers: 4, mlpRatio: 4 },
  stages: 2,
  microBatch: { batch: 4, seq: 64 },
  microBatchesPerStep: 4,
  steps: WARMUP_STEPS + TIMED_STEPS,
  checkpointEvery: 1000,
  banMs: 0,
});
const tokensPerStep = config.microBatch.batch * config.microBatch.seq * config.microBatchesPerStep;
const corpus = Corpus.fromFile(defaultCorpusPath());

async function singleProcess(): Promise<number> {
  const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
  try {
    const trainer = await singleProcessTrainer(device, config, corpus);
    let started = 0;
    for (let step = 0; step < WARMUP_STEPS + TIMED_STEPS; step++) {
      if (step === WARMUP_STEPS) started = performance.now();
      await trainer.trainStep(step);
    }
    const seconds = (performance.now() - started) / 1000;
    trainer.destroy();
    return (TIMED_STEPS * tokensPerStep) / seconds;
  } finally {
    device.destroy();
  }
}

async function pipeline(dataDir: string): Promise<number> {
  const coordinator = await Coordinator.start({
    config,
    corpus,
    dataDir,
    keys: Ed25519Keys.generate(),
    verify: verifyEd25519,
    logger: quiet,
  });
  const nodes = [0, 1, 2, 3].map(() => {
    const node = new NodeRuntime({
      coordinatorUrl: coordinator.url,
      keys: Ed25519Keys.generate(),
      engine: 'gpu',
      logger: quiet,
    });
    node.start();
    return node;
  });
  let started = 0;
  let ended = 0;
  coordinator.on('step', (e: StepEvent) => {
    if (e.step === WARMUP_STEPS) started = performance.now();
    ended = performance.now();
    progress(
      `  pipeline step ${e.step}: loss ${e.loss.toFixed(4)}, nodes per stage [${e.stageNodes.join(', ')}]`,
    );
  });
  await coordinator.finished;
  await Promise.all(nodes.map((n) => n.stop()));
  await coordinator.close();
  return (TIMED_STEPS * tokensPerStep) / ((ended - started) / 1000);
}

/** Sender -> relay -> receiver, every frame decoded and checked at the relay and at the receiver. */
async function relay(): Promise<number> {
  const shape = [8, 128, 256];
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5);
  const spec = [{ dtype: 'f32' as const, shape }];
  const frames = 200;
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 64 << 20 });
  await new Promise((r) => server.once('listening', r));
  const url = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
  const sockets: WebSocket[] = [];
  server.on('connection', (ws) => sockets.push(ws));
  const sender = new WebSocket(url);
  const receiver = new WebSocket(url);
  await Promise.all([sender, receiver].map((ws) => new Promise((r) => ws.once('open', r))));
  while (sockets.length < 2) await new Promise((r) => setTimeout(r, 5));
  const [fromSender, toReceiver] = sockets as [WebSocket, WebSocket];
  const out = new Channel<NodeMessage, CoordinatorMessage>(
    toReceiver,
    new WireReader(nodeMessageSchema, () => []),
    () => {},
  );
  const inbound = new Channel<NodeMessage, CoordinatorMessage>(
    fromSender,
    new WireReader(nodeMessageSchema, () => spec),
    ({ tensors }) =>
      out.send(
        { type: 'task', taskId: 1, kind: 'backward', step: 0, attempt: 0, microBatch: 0, lossScale: 1 },
        tensors,
      ),
  );
  fromSender.on('message', (d: Buffer, bin: boolean) =>
    inbound.receive(bin ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : d.toString()),
  );
  let received = 0;
  const done = new Promise<void>((resolveDone) => {
    const reader = new Channel<CoordinatorMessage, NodeMessage>(
      receiver,
      new WireReader(coordinatorMessageSchema, () => spec),
      () => {
        if (++received === frames) resolveDone();
      },
    );
    receiver.on('message', (d: Buffer, bin: boolean) =>
      reader.receive(bin ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : d.toString()),
    );
  });
  const started = performance.now();
  for (let i = 0; i < frames; i++) {
    for (const part of encodeMessage<NodeMessage>(i + 1, { type: 'result', taskId: i, busyMs: 1 }, [
      { dtype: 'f32', shape, data },
    ]))
      sender.send(part);
    if (sender.bufferedAmount > 64 << 20) await new Promise((r) => setTimeout(r, 1));
  }
  await done;
  const seconds = (performance.now() - started) / 1000;
  sender.close();
  receiver.close();
  await new Promise((r) => server.close(r));
  return (frames * data.byteLength) / 1e6 / seconds;
}

/** A node that only authenticates and pings, like a dashboard or a node waiting for work. */
async function lightNode(url: string): Promise<{ ping(): Promise<number>; close(): void }> {
  const keys = Ed25519Keys.generate();
  const ws = new WebSocket(url);
  const waiting = new Map<string, (m: Record<string, unknown>) => void>();
  ws.on('message', (d: Buffer) => {
    const m = JSON.parse(d.toString()) as Record<string, unknown>;
    waiting.get(m.type as string)?.(m);
  });
  const next = (type: string): Promise<Record<string, unknown>> => new Promise((r) => waiting.set(type, r));
  let id = 1;
  const send = (m: Parameters<typeof encodeMessage<NodeMessage>>[1]): void =>
    void ws.send(encodeMessage<NodeMessage>(id++, m)[0]!);
  await new Promise((r) => ws.once('open', r));
  const challenge = next('challenge');
  send({ type: 'hello', nodeId: keys.publicKeyHex, client: 'bench', engine: 'cpu', receiptCursor: 0 });
  const c = await challenge;
  const welcome = next('welcome');
  send({
    type: 'auth',
    signature: Buffer.from(
      keys.sign(authChallengeBytes(c.nonce as string, c.coordinatorKey as string, keys.publicKeyHex)),
    ).toString('base64'),
  });
  await welcome;
  return {
    ping: async () => {
      const pong = next('pong');
      const t = performance.now();
      send({ type: 'ping', sentAt: t });
      await pong;
      return performance.now() - t;
    },
    close: () => ws.terminate(),
  };
}

async function control(dataDir: string): Promise<{ p50: number; p99: number }> {
  const coordinator = await Coordinator.start({
    config,
    corpus,
    dataDir,
    keys: Ed25519Keys.generate(),
    verify: verifyEd25519,
    logger: quiet,
  });
  const nodes = [];
  for (let i = 0; i < LIGHT_NODES; i += 50)
    nodes.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(50, LIGHT_NODES - i) }, () => lightNode(coordinator.url)),
      )),
    );
  progress(`  ${coordinator.status().nodes} lightweight nodes authenticated`);
  const samples: number[] = [];
  for (let round = 0; round < PING_ROUNDS; round++)
    samples.push(...(await Promise.all(nodes.map((n) => n.ping()))));
  for (const n of nodes) n.close();
  await coordinator.close();
  samples.sort((a, b) => a - b);
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  return { p50: at(0.5), p99: at(0.99) };
}

const root = mkdtempSync(join(tmpdir(), 'tributary-bench-'));
try {
  progress(
    `model: ${config.model.layers} layers, width ${config.model.width}; micro-batch ${config.microBatch.batch}x${config.microBatch.seq}, ${config.microBatchesPerStep} per step; ${TIMED_STEPS} timed steps`,
  );
  progress('single-process trainer...');
  const single = await singleProcess();
  progress('2 stages x 2 replicas over WebSockets...');
  const piped = await pipeline(resolve(root, 'pipeline'));
  progress('relay throughput...');
  const relayMb = await relay();
  progress(`control latency with ${LIGHT_NODES} nodes...`);
  const latency = await control(resolve(root, 'control'));
  const report = {
    single_tokens_per_s: Number(single.toFixed(1)),
    pipeline_tokens_per_s: Number(piped.toFixed(1)),
    relay_mb_per_s: Number(relayMb.toFixed(1)),
    nodes: LIGHT_NODES,
    control_p50_ms: Number(latency.p50.toFixed(2)),
    control_p99_ms: Number(latency.p99.toFixed(2)),
  };
  if (json) console.log(JSON.stringify(report));
  else {
    console.log(`single-process trainer      ${report.single_tokens_per_s} tokens/s`);
    console.log(`pipeline 2 stages x 2       ${report.pipeline_tokens_per_s} tokens/s`);
    console.log(`relay (decode+check+encode) ${report.relay_mb_per_s} MB/s`);
    console.log(
      `control ping, ${LIGHT_NODES} nodes      p50 ${report.control_p50_ms} ms, p99 ${report.control_p99_ms} ms`,
    );
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
