import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent } from '../../main/agent/agent.js';
import { FileCoordinatorPins } from '../../main/identity/coordinator-pins.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { testCoordinator, testReceipt } from '../agent/signing.js';
import { quiet, startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';

const { dir, cleanup } = tempDir('tributary-pins-');
afterAll(cleanup);

function once<T>(node: NodeRuntime, event: string): Promise<T> {
  return new Promise((resolve) => node.once(event, (value: T) => resolve(value)));
}

/**
 * An impostor answers at the coordinator's address with its own key (a hijacked DNS name, a process that
 * took the port). Without --coordinator-key the node must still notice: it pinned the real key on first
 * contact.
 */
describe('coordinator key pinned on first contact', () => {
  it('learns the key, records it in the data dir, and refuses an impostor at the same address', async () => {
    const config = tinyConfig({ stages: 1, steps: 1 });
    const real = await startCoordinator(config, join(dir, 'real'));
    const port = Number(new URL(real.url).port);
    const pins = new FileCoordinatorPins(join(dir, 'node', 'coordinators.json'));
    const node = startNode(real.url, 'cpu', { pins });
    const learned = await once<string>(node, 'pinned');
    expect(learned).toBe(real.publicKey);
    expect(JSON.parse(readFileSync(pins.path, 'utf8'))).toEqual({ [real.url]: real.publicKey });

    await real.close();
    const impostor = await startCoordinator(config, join(dir, 'impostor'), { port });
    try {
      expect(await once<string>(node, 'refused')).toMatch(/is not the pinned/);
      await node.stop();

      // A restarted node reads the pin from its data dir and refuses too.
      const restarted = startNode(impostor.url, 'cpu', { pins });
      expect(await once<string>(restarted, 'refused')).toMatch(/is not the pinned one/);
      await restarted.stop();

      // Told explicitly, it trusts the new key and replaces the pin.
      const told = startNode(impostor.url, 'cpu', { pins, coordinatorKey: impostor.publicKey });
      await once(told, 'connected');
      expect(pins.get(impostor.url)).toBe(impostor.publicKey);
      await told.stop();
    } finally {
      await impostor.close();
    }
  }, 60_000);

  it('keeps receipts signed by a key it has not pinned out of the ledger', async () => {
    const pinned = testCoordinator();
    const other = testCoordinator();
    const agent = await Agent.open({
      dataDir: join(dir, 'agent'),
      tickMs: 0,
      pollHost: false,
      hostSensors: false,
      telemetrySources: [],
      logger: quiet,
    });
    try {
      agent.trustCoordinatorKey(pinned.keyHex);
      agent.receipts.accept(other.sign(testReceipt(1)));
      agent.receipts.accept(pinned.sign(testReceipt(2)));
      expect(agent.ledger.receipts().map((r) => r.receiptId)).toEqual(['r-2']);
      expect(agent.exportCsv('events')).toMatch(/receipt-rejected,.*unknown coordinator key/);
    } finally {
      await agent.stop();
    }
  });
});
