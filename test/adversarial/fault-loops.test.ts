import { writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { mulberry32 } from '../../gpu/model/params.js';
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { FileKeyStore, loadOrCreateKeys } from '../../main/identity/key-store.js';
import { agentPaths } from '../../main/agent/paths.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { corpusPath, startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { CliProcess, spawnNode, until } from '../network/processes.js';

/**
 * Faults at random points, from a seed (FAULT_SEED, printed) so a failing schedule can be replayed:
 * SIGKILL-and-restart of the coordinator and node processes in a bounded loop (FAULT_LOOPS kills), and a
 * link cut in the middle of a large tensor frame.
 */
const seed = Number(process.env.FAULT_SEED ?? Date.now() % 100_000);
const loops = Number(process.env.FAULT_LOOPS ?? 4);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('SIGKILL-and-restart loops', () => {
  const { dir, cleanup } = tempDir('tributary-faults-');
  const children: CliProcess[] = [];
  afterAll(async () => {
    await Promise.all(children.map((c) => c.kill()));
    cleanup();
  });

  test(
    `coordinator and nodes killed at random points (seed ${seed}): the run completes, every unit credited once`,
    { timeout: 600_000 },
    async () => {
      // A step takes well under a second here: enough of them that every loop kills before the run ends.
      const STEPS = 40 + 10 * loops;
      const config = tinyConfig({ steps: STEPS, checkpointEvery: 2, taskTimeoutMs: 20_000 });
      const port = await freePort();
      const configPath = join(dir, 'run.json');
      writeFileSync(configPath, JSON.stringify(config));
      const coordinatorArgs = [
        'coordinator',
        ...['--port', String(port), '--db', join(dir, 'coord', 'coordinator.db')],
        ...['--config', configPath, '--corpus', corpusPath],
      ];
      const url = `ws://127.0.0.1:${port}`;
      const api = async <T>(path: string): Promise<T> =>
        (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as T;
      const status = (): Promise<{ step: number; state: string; receipts: number }> => api('/status');
      const keys = [0, 1, 2].map((i) => join(dir, `node-${i}.key`));
      // Made here, so each node's id is known whatever its latest process has logged.
      const nodeIds = keys.map((k) => loadOrCreateKeys(new FileKeyStore(k)).publicKeyHex);
      const processes: CliProcess[] = [new CliProcess(coordinatorArgs)];
      const start = (victim: number): void => {
        const child =
          victim === 0 ? new CliProcess(coordinatorArgs) : spawnNode(url, keys[victim - 1]!, 'cpu');
        children.push(child);
        processes[victim] = child;
      };
      // Two cores shared with other work: a CLI process can take a minute to compile and start.
      const coordinatorUp = async (what: string): Promise<void> => {
        const coordinator = processes[0]!;
        let exited: string | undefined;
        coordinator.proc.once('exit', (code, signal) => (exited = `${code ?? signal}`));
        await until(
          what,
          () => {
            if (exited !== undefined)
              throw new Error(
                `the coordinator exited (${exited}): ${coordinator.output.slice(-5).join(' | ')}`,
              );
            return status().then(
              () => true,
              () => false,
            );
          },
          180_000,
        );
      };

      children.push(processes[0]!);
      await coordinatorUp('coordinator up');
      for (let i = 1; i <= keys.length; i++) start(i);

      // Seeded, so the kill points replay from FAULT_SEED.
      const next = mulberry32(seed);
      // One loop, at random, kills the coordinator, another kills a node, and about one in four of the others
      // kill the coordinator; the rest kill a random node.
      const coordinatorLoop = Math.floor(next() * loops);
      const nodeLoop = (coordinatorLoop + 1 + Math.floor(next() * (loops - 1))) % loops;
      const schedule: string[] = [];
      for (let loop = 0; loop < loops; loop++) {
        const { step } = await status();
        if (step >= STEPS - 2) break;
        // A random point: a step or two on, then a moment into the next one.
        const target = step + 1 + Math.floor(next() * 2);
        await until(`step ${target}`, async () => (await status()).step >= target, 240_000);
        await sleep(Math.floor(next() * 400));
        const coordinator = loop === coordinatorLoop || (loop !== nodeLoop && next() < 0.25);
        const victim = coordinator ? 0 : 1 + Math.floor(next() * keys.length);
        const at = (await status()).step;
        await processes[victim]!.kill('SIGKILL');
        schedule.push(`${victim === 0 ? 'coordinator' : `node ${victim}`} at step ${at}`);
        await sleep(Math.floor(next() * 1000));
        start(victim);
        if (victim === 0) await coordinatorUp('coordinator back');
      }
      console.log(`fault loop (seed ${seed}): killed ${schedule.join('; ')}`);
      expect(schedule.some((s) => s.startsWith('coordinator'))).toBe(true);
      expect(schedule.some((s) => s.startsWith('node'))).toBe(true);

      await until('run finished', async () => (await status()).state === 'done', 300_000);
      const done = await status();
      const units = STEPS * config.stages * config.microBatchesPerStep;
      expect(done.step).toBe(STEPS);
      expect(done.receipts).toBe(units);
      const losses = await api<Array<{ step: number; loss: number }>>('/api/losses');
      expect(losses.map((l) => l.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i));
      for (const { loss } of losses) expect(Number.isFinite(loss) && loss > 0).toBe(true);
      const balances = await api<Array<{ nodeId: string; units: number }>>('/api/balances');
      expect(balances.reduce((n, b) => n + b.units, 0)).toBe(units);

      // Each node's own ledger ends with exactly the receipts the coordinator credited it, once each, and
      // verifies (hash chain, signed head, coordinator signatures) after the node itself is SIGKILLed.
      const ledgerOf = (key: string): Ledger => new Ledger(agentPaths(`${key}.d`).ledger, { readonly: true });
      const held = (i: number): number => {
        const ledger = ledgerOf(keys[i]!);
        try {
          return ledger.receipts().length;
        } finally {
          ledger.close();
        }
      };
      const expected = (i: number): number => balances.find((b) => b.nodeId === nodeIds[i])?.units ?? 0;
      await until('receipts delivered', () => keys.every((_, i) => held(i) === expected(i)), 60_000).catch(
        () => {},
      );
      expect(keys.map((_, i) => held(i))).toEqual(keys.map((_, i) => expected(i)));
      await Promise.all(processes.map((p) => p.kill('SIGKILL')));
      for (const key of keys) {
        const ledger = ledgerOf(key);
        try {
          const ids = ledger.receipts().map((r) => r.receiptId);
          expect(new Set(ids).size).toBe(ids.length);
          expect(ledger.verify()).toMatchObject({ ok: true });
        } finally {
          ledger.close();
        }
      }
      console.log(`${units} units credited once; ledgers hold ${keys.map((_, i) => expected(i)).join(', ')}`);
    },
  );
});

/**
 * A link between a node and the coordinator that can be cut: every byte passes through until `cutNext` is
 * set, then the first chunk of at least `bigChunk` bytes in the chosen direction (only a tensor frame is
 * that large) is passed on half-way and both sockets are destroyed, as a dropped connection would.
 */
class CuttableLink {
  cuts = 0;
  private armed: 'toNode' | 'toCoordinator' | null = null;
  private readonly server: Server;

  private constructor(
    target: number,
    private readonly bigChunk: number,
  ) {
    this.server = createServer((client) => {
      const upstream = createConnection(target, '127.0.0.1');
      const cut = (): void => {
        this.armed = null;
        this.cuts++;
        client.destroy();
        upstream.destroy();
      };
      const pipe = (from: Socket, to: Socket, direction: 'toNode' | 'toCoordinator'): void => {
        from.on('data', (chunk: Buffer) => {
          if (this.armed === direction && chunk.length >= this.bigChunk) {
            to.write(chunk.subarray(0, chunk.length >> 1), cut);
            return;
          }
          to.write(chunk);
        });
        from.on('error', () => to.destroy());
        from.on('close', () => to.destroy());
      };
      pipe(client, upstream, 'toCoordinator');
      pipe(upstream, client, 'toNode');
    });
  }

  static async open(target: number, bigChunk: number): Promise<CuttableLink> {
    const link = new CuttableLink(target, bigChunk);
    await new Promise<void>((resolve) => link.server.listen(0, '127.0.0.1', resolve));
    return link;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  cutNext(direction: 'toNode' | 'toCoordinator'): void {
    this.armed = direction;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('a link cut mid-transfer', () => {
  const { dir, cleanup } = tempDir('tributary-cut-');
  afterAll(cleanup);

  test.each(['toNode', 'toCoordinator'] as const)(
    'in the middle of a large tensor frame (%s): the node reconnects and training completes',
    { timeout: 300_000 },
    async (direction) => {
      const STEPS = 8;
      // Two replicas of one stage, so every step's gradients cross the link both ways (a lone replica keeps
      // its own), wide enough (about 1 MB) to arrive in many large chunks.
      const config = tinyConfig({
        stages: 1,
        steps: STEPS,
        checkpointEvery: 2,
        model: { vocabSize: 256, contextLength: 16, width: 96, heads: 2, layers: 2, mlpRatio: 4 },
      });
      const coordinator = await startCoordinator(config, join(dir, direction));
      const link = await CuttableLink.open(coordinator.port, 32 * 1024);
      const nodes: NodeRuntime[] = [];
      const uncaught: unknown[] = [];
      const record = (err: unknown): void => void uncaught.push(err);
      process.on('uncaughtException', record);
      try {
        const cutNode = startNode(link.url, 'cpu');
        nodes.push(cutNode, startNode(coordinator.url, 'cpu'));
        const closes: number[] = [];
        cutNode.on('disconnected', (e: { code: number }) => closes.push(e.code));
        await until('step 2', () => coordinator.status().step >= 2, 120_000);
        link.cutNext(direction);
        await until('the link is cut', () => link.cuts > 0, 120_000);
        await until('the cut node is back', () => cutNode.status.connected && closes.length > 0, 60_000);
        await coordinator.finished;
        const status = coordinator.status();
        expect(status.step).toBe(STEPS);
        expect(status.receipts).toBe(STEPS * config.stages * config.microBatchesPerStep);
        expect(Number.isFinite(status.loss)).toBe(true);
        expect(closes[0]).toBe(1006);
        expect(uncaught).toEqual([]);
        console.log(
          `cut ${direction} at a large frame; the node came back (close ${closes[0]}), ${STEPS} steps done`,
        );
      } finally {
        process.off('uncaughtException', record);
        await Promise.all(nodes.map((n) => n.stop()));
        await link.close();
        await coordinator.close();
      }
    },
  );
});
