import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import type { NodeRuntime } from '../../main/node/runtime.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import { corpusPath, startNode, tempDir, tinyConfig } from './helpers.js';
import { CliProcess, until } from './processes.js';

const STEPS = 14;
const config = tinyConfig({ steps: STEPS, checkpointEvery: 3 });
const { dir, cleanup } = tempDir();
const children: CliProcess[] = [];
const nodes: NodeRuntime[] = [];
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  await Promise.all(children.map((c) => c.kill()));
  cleanup();
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

test(
  'coordinator SIGKILLed and restarted: nodes reconnect, the run resumes, no receipt lost',
  { timeout: 600_000 },
  async () => {
    const port = await freePort();
    const configPath = join(dir, 'run.json');
    writeFileSync(configPath, JSON.stringify(config));
    const args = [
      'coordinator',
      '--port',
      String(port),
      '--db',
      join(dir, 'coord', 'coordinator.db'),
      '--config',
      configPath,
      '--corpus',
      corpusPath,
    ];
    const api = async <T>(path: string): Promise<T> =>
      (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as T;
    const reachable = async (): Promise<boolean> =>
      api('/status').then(
        () => true,
        () => false,
      );

    let coordinator = new CliProcess(args);
    children.push(coordinator);
    await until('coordinator up', reachable);
    const held = new Map<string, Map<string, SignedReceipt>>();
    let reconnects = 0;
    for (let i = 0; i < 4; i++) {
      const node = startNode(`ws://127.0.0.1:${port}`, 'gpu');
      held.set(node.nodeId, new Map());
      node.on('receipt', (r: SignedReceipt) => held.get(node.nodeId)!.set(r.receipt.receiptId, r));
      node.on('connected', () => reconnects++);
      nodes.push(node);
    }

    // Four GPU nodes compiling their kernels at once: minutes on a cold Mesa shader cache on two cores.
    await until('step 5', async () => (await api<{ step: number }>('/status')).step >= 5, 240_000);
    const lossesBefore = await api<Array<{ step: number; loss: number }>>('/api/losses');
    await coordinator.kill('SIGKILL');
    const heldBefore = [...held.values()].flatMap((m) => [...m.keys()]);
    expect(heldBefore.length).toBeGreaterThan(0);
    const connectsBefore = reconnects;

    coordinator = new CliProcess(args);
    children.push(coordinator);
    await until('coordinator back', reachable);
    const resumedAt = (await api<{ step: number }>('/status')).step;
    await until(
      'run finished',
      async () => (await api<{ state: string }>('/status')).state === 'done',
      180_000,
    );
    expect(reconnects - connectsBefore).toBeGreaterThanOrEqual(4);

    const status = await api<{ step: number; receipts: number }>('/status');
    expect(status.step).toBe(STEPS);
    expect(status.receipts).toBe(STEPS * config.stages * config.microBatchesPerStep);
    const balances = await api<Array<{ nodeId: string; flops: number; units: number }>>('/api/balances');
    await until(
      'receipts delivered',
      () => balances.every((b) => held.get(b.nodeId)?.size === b.units),
      30_000,
    );
    for (const b of balances) {
      const flops = [...held.get(b.nodeId)!.values()].reduce((sum, r) => sum + r.receipt.flops, 0);
      expect(flops).toBeCloseTo(b.flops, 0);
    }
    // Every receipt issued before the crash is still held and still counted.
    const heldAfter = new Set([...held.values()].flatMap((m) => [...m.keys()]));
    for (const id of heldBefore) expect(heldAfter.has(id)).toBe(true);

    // Steps redone from the checkpoint reproduce the losses first recorded (only summation order may differ).
    const lossesAfter = await api<Array<{ step: number; loss: number }>>('/api/losses');
    expect(lossesAfter.map((l) => l.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i));
    for (const before of lossesBefore)
      expect(Math.abs(lossesAfter[before.step]!.loss - before.loss) / before.loss).toBeLessThan(1e-5);
    console.log(
      `killed at step ${lossesBefore.length}, resumed from checkpoint step ${resumedAt}; ${status.receipts} receipts, none lost or doubled`,
    );
  },
);
