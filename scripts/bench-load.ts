/**
 * Load benchmark: one coordinator (the real CLI, in its own process so its CPU and memory can be read) and
 * 1,000 simulated lightweight nodes in this process, all on 127.0.0.1. Each node authenticates, asks for work,
 * takes its stage assignment and answers every task, gradient request and apply with correctly shaped zeros
 * (no engine), while every node sends a heartbeat (ping) each second, spread over the second. Measured: the ping round trip (p50,
 * p99), the coordinator's CPU (percent of one core over the heartbeat window) and resident memory, and
 * whether each receipt the coordinator issued reached its node exactly once.
 * `npm run bench:load` prints a table; `-- --json` prints one JSON object on stdout (progress on stderr).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { WebSocket } from 'ws';
import type { GptConfig, MicroBatchShape, StageRange } from '../gpu/model/config.js';
import { stageParamCount } from '../gpu/model/params.js';
import { Ed25519Keys } from '../main/identity/ed25519.js';
import { authChallengeBytes } from '../shared/protocol/auth.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type { NodeMessage, Outgoing } from '../shared/protocol/messages.js';
import { stateTensors } from '../shared/protocol/stage-state.js';
import { encodeMessage } from '../shared/protocol/wire.js';

const json = process.argv.includes('--json');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const NODES = Number(process.env.BENCH_LOAD_NODES ?? 1000);
/** Nodes connect in waves: the coordinator caps unauthenticated connections per address (sessions.ts). */
const WAVE = 50;
const HEARTBEAT_ROUNDS = 10;
const repoRoot = resolve(import.meta.dirname, '..');

type Incoming = Record<string, unknown> & { type: string };

/** A node without an engine: it speaks the whole protocol and answers work with zeros of the right shape. */
class LightNode {
  readonly receipts = new Map<string, number>();
  statements = 0;
  placed = false;
  private readonly keys = Ed25519Keys.generate();
  private readonly ws: WebSocket;
  private id = 1;
  private model!: GptConfig;
  private shape!: MicroBatchShape;
  private range: StageRange | null = null;
  private pong: ((ms: number) => void) | null = null;
  readonly welcomed: Promise<void>;

  constructor(url: string) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.ws.on('error', (err) => progress(`node socket error: ${err.message}`));
    let welcomed!: () => void;
    this.welcomed = new Promise((r) => (welcomed = r));
    this.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      const m = JSON.parse(data.toString('utf8')) as Incoming;
      if (m.type === 'welcome') welcomed();
      this.onMessage(m);
    });
    this.ws.once('open', () =>
      this.send({
        type: 'hello',
        nodeId: this.keys.publicKeyHex,
        client: 'bench-load',
        engine: 'cpu',
        receiptCursor: 0,
      }),
    );
  }

  private send(message: Outgoing<NodeMessage>, tensors: Tensor[] = []): void {
    for (const part of encodeMessage<NodeMessage>(this.id++, message, tensors)) this.ws.send(part);
  }

  private zeros(length: number, shape = [length]): Tensor {
    return { dtype: 'f32', shape, data: new Float32Array(length) };
  }

  private boundary(): Tensor {
    const { batch, seq } = this.shape;
    return this.zeros(batch * seq * this.model.width, [batch, seq, this.model.width]);
  }

  private paramCount(): number {
    return stageParamCount(this.model, this.range!);
  }

  private state(optimizerStep: number): Tensor[] {
    const n = this.paramCount();
    return stateTensors({
      optimizerStep,
      params: new Float32Array(n),
      m: new Float32Array(n),
      v: new Float32Array(n),
    });
  }

  private onMessage(m: Incoming): void {
    switch (m.type) {
      case 'challenge': {
        const bytes = authChallengeBytes(
          m.nonce as string,
          m.coordinatorKey as string,
          this.keys.publicKeyHex,
        );
        return this.send({ type: 'auth', signature: Buffer.from(this.keys.sign(bytes)).toString('base64') });
      }
      case 'welcome':
        this.model = m.model as GptConfig;
        this.shape = m.shape as MicroBatchShape;
        return this.send({ type: 'join' });
      case 'assign':
        this.range = m.range as StageRange;
        this.placed = true;
        return this.send({ type: 'loaded', step: m.step as number, stashes: 4 });
      case 'task': {
        const first = this.range!.index === 0;
        const kind = m.kind as string;
        const loss = kind === 'forwardBackward' || kind === 'evaluate' ? 5.5 : undefined;
        const carries = kind === 'forward' || ((kind === 'backward' || kind === 'forwardBackward') && !first);
        return this.send(
          { type: 'result', taskId: m.taskId as number, loss, busyMs: 1 },
          carries ? [this.boundary()] : [],
        );
      }
      case 'gradsRequest':
        return this.send({ type: 'grads', step: m.step as number, attempt: m.attempt as number }, [
          this.zeros(this.paramCount()),
        ]);
      case 'apply': {
        const optimizerStep = (m.step as number) + 1;
        return this.send(
          { type: 'applied', step: m.step as number, optimizerStep },
          m.sendState ? this.state(optimizerStep) : [],
        );
      }
      case 'stateRequest':
        return this.send(
          { type: 'state', requestId: m.requestId as number, optimizerStep: 0 },
          this.state(0),
        );
      case 'receipt': {
        const id = (m.signed as { receipt: { receiptId: string } }).receipt.receiptId;
        this.receipts.set(id, (this.receipts.get(id) ?? 0) + 1);
        return;
      }
      case 'credits':
        this.statements++;
        return;
      case 'pong':
        this.pong?.(performance.now() - (m.sentAt as number));
        this.pong = null;
        return;
      default:
        return;
    }
  }

  ping(): Promise<number> {
    return new Promise((resolvePing) => {
      this.pong = resolvePing;
      this.send({ type: 'ping', sentAt: performance.now() });
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
}

async function status(
  url: string,
): Promise<{ state: string; step: number; receipts: number; nodes: number }> {
  const res = await fetch(`${url.replace(/^ws/, 'http')}/status`);
  return (await res.json()) as { state: string; step: number; receipts: number; nodes: number };
}

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const root = mkdtempSync(join(tmpdir(), 'tributary-bench-load-'));
const config = join(root, 'run.json');
writeFileSync(
  config,
  JSON.stringify({
    runId: 'bench-load',
    stages: 2,
    // Long enough that every wave of joiners is placed (between steps) before the run ends.
    steps: 40,
    microBatchesPerStep: 8,
    checkpointEvery: 1000,
    taskTimeoutMs: 120_000,
    banMs: 0,
  }),
);
const coordinator = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    'main/cli/index.ts',
    'coordinator',
    '--port',
    '0',
    '--db',
    join(root, 'coordinator.db'),
    '--config',
    config,
    '--log-level',
    'info',
  ],
  { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] },
);
const nodes: LightNode[] = [];
try {
  const url = await new Promise<string>((resolveUrl, reject) => {
    coordinator.once('exit', (code) => reject(new Error(`coordinator exited (${code})`)));
    createInterface({ input: coordinator.stdout! }).on('line', (line) => {
      try {
        const log = JSON.parse(line) as { url?: string };
        if (log.url) resolveUrl(log.url);
      } catch {
        // not a log line
      }
    });
  });
  const pid = coordinator.pid!;
  progress(`coordinator ${url} (pid ${pid}); connecting ${NODES} lightweight nodes in waves of ${WAVE}...`);
  for (let i = 0; i < NODES; i += WAVE) {
    const wave = Array.from({ length: Math.min(WAVE, NODES - i) }, () => new LightNode(url));
    nodes.push(...wave);
    await Promise.all(wave.map((n) => n.welcomed));
  }
  progress(`  ${(await status(url)).nodes} authenticated; waiting for every node to take its assignment...`);
  await until(
    'every node placed',
    async () => {
      if (nodes.every((n) => n.placed)) return true;
      if ((await status(url)).state === 'done') throw new Error('the run ended before every node was placed');
      return false;
    },
    300_000,
  );
  progress(
    `  all placed; ${HEARTBEAT_ROUNDS} heartbeat rounds (every node pings once a second) while training`,
  );
  // The simulated nodes share this one event loop: its own delay is part of every round trip measured here.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const cpuBefore = cpuSeconds(pid);
  const wallBefore = performance.now();
  const samples: number[] = [];
  for (let round = 0; round < HEARTBEAT_ROUNDS; round++) {
    const started = performance.now();
    // Heartbeats spread over the second, as independent nodes send them (not 1,000 in one burst).
    samples.push(
      ...(await Promise.all(
        nodes.map((n, i) =>
          new Promise((r) => setTimeout(r, (i * 1000) / nodes.length)).then(() => n.ping()),
        ),
      )),
    );
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (performance.now() - started))));
  }
  const cpuPct = ((cpuSeconds(pid) - cpuBefore) / ((performance.now() - wallBefore) / 1000)) * 100;
  loopDelay.disable();
  progress(
    `  the simulated nodes' own event-loop delay: p50 ${(loopDelay.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms; bench process CPU ${((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(1)} s`,
  );
  await until('the run finishes', async () => (await status(url)).state === 'done', 600_000);
  const final = await status(url);
  // Receipts are sent right after each commit; give the last ones a moment on the wire.
  await until(
    'the last receipts arrive',
    () => nodes.reduce((sum, n) => sum + n.receipts.size, 0) >= final.receipts,
    5_000,
  ).catch(() => {});
  const rss = rssMb(pid);
  const received = nodes.reduce((sum, n) => sum + n.receipts.size, 0);
  const duplicated = nodes.reduce((sum, n) => sum + [...n.receipts.values()].filter((c) => c > 1).length, 0);
  samples.sort((a, b) => a - b);
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  const report = {
    nodes: NODES,
    p50_ms: Number(at(0.5).toFixed(2)),
    p99_ms: Number(at(0.99).toFixed(2)),
    coordinator_cpu_pct: Number(cpuPct.toFixed(1)),
    coordinator_rss_mb: Number(rss.toFixed(1)),
    receipts_dropped: final.receipts - received,
    receipts_duplicated: duplicated,
  };
  progress(
    `  run ${final.state} after ${final.step} steps; ${final.receipts} receipts issued, ${received} received; ${nodes.reduce((s, n) => s + n.statements, 0)} credit statements`,
  );
  if (json) console.log(JSON.stringify(report));
  else {
    console.log(`nodes                   ${report.nodes}`);
    console.log(`control p50 / p99       ${report.p50_ms} / ${report.p99_ms} ms (ping round trip)`);
    console.log(`coordinator CPU         ${report.coordinator_cpu_pct}% of one core`);
    console.log(`coordinator RSS         ${report.coordinator_rss_mb} MB`);
    console.log(`receipts dropped / dup  ${report.receipts_dropped} / ${report.receipts_duplicated}`);
  }
} finally {
  for (const n of nodes) n.close();
  coordinator.kill('SIGTERM');
  rmSync(root, { recursive: true, force: true });
}
