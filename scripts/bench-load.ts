/**
 * Load benchmark: one coordinator (the real CLI, in its own process so its CPU and memory can be read) and
 * 1,000 simulated lightweight nodes (scripts/bench/light-node.ts) spread over worker threads of this process,
 * all on 127.0.0.1. Each node authenticates, asks for work, takes its stage assignment and answers every task,
 * gradient request and apply with correctly shaped zeros (no engine), while every node sends a heartbeat
 * (ping) each second, spread over the second, for ten seconds of training. Measured: the ping round trip (p50,
 * p99), the steps trained meanwhile, the coordinator's CPU (percent of one core over the heartbeat window),
 * resident memory and event-loop delay (scripts/bench/loop-probe.ts), the simulated nodes' own event-loop
 * delay (their share of every round trip), and whether each receipt the coordinator issued reached its node
 * exactly once. `npm run bench:load` prints a table; `-- --json` prints one JSON object on stdout (progress
 * on stderr).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';
import type { LoadWorkerReply, LoadWorkerRequest, LoopDelay } from './bench/load-protocol.js';

const json = process.argv.includes('--json');
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const NODES = Number(process.env.BENCH_LOAD_NODES ?? 1000);
/** Nodes connect in waves: the coordinator caps unauthenticated connections per address (sessions.ts). */
const WAVE = 50;
const HEARTBEAT_ROUNDS = 10;
/** Worker threads holding the simulated nodes, so that the nodes' own work does not delay every round trip. */
const WORKERS = Number(process.env.BENCH_LOAD_WORKERS ?? 4);
const repoRoot = resolve(import.meta.dirname, '..');

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
    // Long enough that every wave of joiners is placed (between steps) and that training goes on through the
    // heartbeats (checked below), on a loaded machine too.
    steps: 150,
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
    // Measures the coordinator's own event-loop delay while the nodes heartbeat (asked over IPC).
    '--import',
    './scripts/bench/loop-probe.ts',
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
  { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] },
);

/** A worker thread and the replies it has not yet been asked for. */
class NodeWorker {
  private readonly worker = new Worker(new URL('./bench/load-worker.ts', import.meta.url));
  private readonly waiting = new Map<LoadWorkerReply['type'], Array<(reply: LoadWorkerReply) => void>>();

  constructor() {
    this.worker.on('message', (reply: LoadWorkerReply) => this.waiting.get(reply.type)?.shift()?.(reply));
    this.worker.on('error', (err) => progress(`load worker failed: ${err.stack ?? err.message}`));
  }

  ask<T extends LoadWorkerReply['type']>(
    request: LoadWorkerRequest,
    answer: T,
  ): Promise<Extract<LoadWorkerReply, { type: T }>> {
    return new Promise((r) => {
      const queue = this.waiting.get(answer) ?? [];
      queue.push(r as (reply: LoadWorkerReply) => void);
      this.waiting.set(answer, queue);
      this.worker.postMessage(request);
    });
  }

  close(): void {
    this.worker.postMessage({ type: 'close' } satisfies LoadWorkerRequest);
  }
}

const workers = Array.from({ length: WORKERS }, () => new NodeWorker());
const tally = async (): Promise<{
  placed: number;
  receipts: number;
  duplicated: number;
  statements: number;
}> => {
  const replies = await Promise.all(workers.map((w) => w.ask({ type: 'tally' }, 'tally')));
  const sum = (key: 'placed' | 'receipts' | 'duplicated' | 'statements'): number =>
    replies.reduce((total, r) => total + r[key], 0);
  return {
    placed: sum('placed'),
    receipts: sum('receipts'),
    duplicated: sum('duplicated'),
    statements: sum('statements'),
  };
};
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
  progress(
    `coordinator ${url} (pid ${pid}); connecting ${NODES} lightweight nodes in ${WORKERS} worker threads, in waves of ${WAVE}...`,
  );
  for (let i = 0; i < NODES; i += WAVE) {
    const wave = Array.from({ length: Math.min(WAVE, NODES - i) }, (_, k) => i + k);
    // Node i lives in worker i mod WORKERS, so each worker's heartbeats spread over the whole second.
    await Promise.all(
      workers.map((w, k) =>
        w.ask({ type: 'connect', url, indices: wave.filter((n) => n % WORKERS === k) }, 'connected'),
      ),
    );
  }
  progress(`  ${(await status(url)).nodes} authenticated; waiting for every node to take its assignment...`);
  await until(
    'every node placed',
    async () => {
      if ((await tally()).placed === NODES) return true;
      if ((await status(url)).state === 'done') throw new Error('the run ended before every node was placed');
      return false;
    },
    300_000,
  );
  progress(
    `  all placed; ${HEARTBEAT_ROUNDS} heartbeat rounds (every node pings once a second) while training`,
  );
  const coordinatorLoop = once(coordinator, 'message') as Promise<[{ loopDelay: LoopDelay }]>;
  coordinator.send('loop-delay:start');
  const stepBefore = (await status(url)).step;
  const cpuBefore = cpuSeconds(pid);
  const benchCpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  const startAt = Date.now() + 100;
  const rounds = await Promise.all(
    workers.map((w) =>
      w.ask({ type: 'heartbeat', rounds: HEARTBEAT_ROUNDS, startAt, total: NODES }, 'heartbeats'),
    ),
  );
  const seconds = (performance.now() - wallBefore) / 1000;
  const cpuPct = ((cpuSeconds(pid) - cpuBefore) / seconds) * 100;
  const benchCpu = process.cpuUsage(benchCpuBefore);
  const benchCpuPct = ((benchCpu.user + benchCpu.system) / 1e6 / seconds) * 100;
  const after = await status(url);
  const stepAfter = after.step;
  if (after.state === 'done')
    throw new Error('the run ended during the heartbeats: they were not measured while training');
  coordinator.send('loop-delay:stop');
  const [{ loopDelay }] = await coordinatorLoop;
  // The worst worker: a node's round trip includes its own worker's delay.
  const nodesLoop = rounds.reduce(
    (worst, r) => (r.loopDelay.p99_ms > worst.p99_ms ? r.loopDelay : worst),
    rounds[0]!.loopDelay,
  );
  progress(
    `  ${stepAfter - stepBefore} steps trained during the heartbeats; event-loop delay p50/p99/max: coordinator ${loopDelay.p50_ms}/${loopDelay.p99_ms}/${loopDelay.max_ms} ms, simulated nodes (worst worker) ${nodesLoop.p50_ms}/${nodesLoop.p99_ms}/${nodesLoop.max_ms} ms; bench process ${benchCpuPct.toFixed(0)}% of a core`,
  );
  await until('the run finishes', async () => (await status(url)).state === 'done', 600_000);
  const final = await status(url);
  // Receipts are sent right after each commit; give the last ones a moment on the wire.
  await until(
    'the last receipts arrive',
    async () => (await tally()).receipts >= final.receipts,
    5_000,
  ).catch(() => {});
  const rss = rssMb(pid);
  const received = await tally();
  const samples = rounds.flatMap((r) => r.samples).sort((a, b) => a - b);
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  const report = {
    nodes: NODES,
    p50_ms: Number(at(0.5).toFixed(2)),
    p99_ms: Number(at(0.99).toFixed(2)),
    coordinator_cpu_pct: Number(cpuPct.toFixed(1)),
    coordinator_rss_mb: Number(rss.toFixed(1)),
    receipts_dropped: final.receipts - received.receipts,
    receipts_duplicated: received.duplicated,
    steps_during_heartbeats: stepAfter - stepBefore,
    coordinator_loop_p99_ms: loopDelay.p99_ms,
    nodes_loop_p99_ms: nodesLoop.p99_ms,
  };
  progress(
    `  run ${final.state} after ${final.step} steps; ${final.receipts} receipts issued, ${received.receipts} received; ${received.statements} credit statements`,
  );
  if (json) console.log(JSON.stringify(report));
  else {
    console.log(`nodes                   ${report.nodes} (in ${WORKERS} worker threads)`);
    console.log(`control p50 / p99       ${report.p50_ms} / ${report.p99_ms} ms (ping round trip)`);
    console.log(`steps while measuring   ${report.steps_during_heartbeats}`);
    console.log(`coordinator CPU         ${report.coordinator_cpu_pct}% of one core`);
    console.log(`coordinator RSS         ${report.coordinator_rss_mb} MB`);
    console.log(
      `event-loop delay p99    coordinator ${report.coordinator_loop_p99_ms} ms, nodes ${report.nodes_loop_p99_ms} ms`,
    );
    console.log(`receipts dropped / dup  ${report.receipts_dropped} / ${report.receipts_duplicated}`);
  }
} finally {
  for (const w of workers) w.close();
  coordinator.kill('SIGTERM');
  rmSync(root, { recursive: true, force: true });
}
