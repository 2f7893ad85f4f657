import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { FileCoordinatorPins } from '../../main/identity/coordinator-pins.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { coordinatorProofBytes } from '../../shared/protocol/auth.js';
import { nodeMessageSchema } from '../../shared/protocol/messages.js';
import { encodeMessage, WireReader } from '../../shared/protocol/wire.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { testCoordinator, testReceipt } from '../agent/signing.js';
import { quiet, startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { openQuietAgent } from '../helpers/agent.js';

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

  it('refuses an impostor that shows the pinned public key without holding it', async () => {
    const real = Ed25519Keys.generate();
    const thief = Ed25519Keys.generate();
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => server.once('listening', resolve));
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.on('connection', (ws) => {
      const reader = new WireReader(nodeMessageSchema, () => []);
      ws.on('message', (data: Buffer) => {
        const hello = reader.readText(data.toString('utf8'))?.message;
        if (hello?.type !== 'hello') return;
        // The real key's public half, and a proof only the real key could sign, signed by another key.
        const nonce = 'bm9uY2U=';
        const proof = coordinatorProofBytes(hello.nonce!, nonce, real.publicKeyHex, hello.nodeId);
        const signature = Buffer.from(thief.sign(proof)).toString('base64');
        const challenge = {
          type: 'challenge',
          nonce,
          coordinatorKey: real.publicKeyHex,
          runId: 'r',
          signature,
        };
        for (const part of encodeMessage(0, challenge as never)) ws.send(part);
      });
    });
    const node = startNode(url, 'cpu', { coordinatorKey: real.publicKeyHex });
    try {
      expect(await once<string>(node, 'refused')).toMatch(/could not prove it holds the key/);
      expect(node.status.reason).toMatch(/refused the coordinator/);
    } finally {
      await node.stop();
      server.close();
    }
  });

  it('keeps receipts signed by a key it has not pinned out of the ledger', async () => {
    const pinned = testCoordinator();
    const other = testCoordinator();
    const agent = await openQuietAgent({
      dataDir: join(dir, 'agent'),
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
