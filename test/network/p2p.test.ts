import type { Libp2p, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { TENSOR_PROTOCOL, readTensorMessages, sendTensorMessage } from '../../main/node/p2p.js';
import { startP2pHost } from '../../shared/p2p/host.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import { nodeMessageSchema, type NodeMessage } from '../../shared/protocol/messages.js';
import { WireReader, defaultWireLimits, type Received } from '../../shared/protocol/wire.js';

const SHAPE = [2, 16, 32];
const activations = (): Tensor => ({
  dtype: 'f32',
  shape: SHAPE,
  data: Float32Array.from({ length: 2 * 16 * 32 }, (_, i) => i / 7),
});

const hosts: Libp2p[] = [];
afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.stop()));
});

async function host(options: { relayServer?: boolean; listen?: string[] } = {}): Promise<Libp2p> {
  const h = await startP2pHost({ seed: Ed25519Keys.generate().seed(), ...options });
  hosts.push(h);
  return h;
}

/** Serves the tensor protocol on `h`: every message must be a `result` with one activation tensor. */
function receiver(h: Libp2p): { messages: Received<NodeMessage>[]; errors: Error[]; done: Promise<void> } {
  const messages: Received<NodeMessage>[] = [];
  const errors: Error[] = [];
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  void h.handle(
    TENSOR_PROTOCOL,
    async (stream: Stream) => {
      const reader = new WireReader<NodeMessage>(
        nodeMessageSchema,
        () => [{ dtype: 'f32', shape: SHAPE }],
        defaultWireLimits,
      );
      try {
        for await (const m of readTensorMessages(stream, reader)) messages.push(m);
      } catch (err) {
        errors.push(err as Error);
      }
      finish();
    },
    { runOnLimitedConnection: true },
  );
  return { messages, errors, done };
}

describe('tensors over libp2p', () => {
  it("a node's libp2p peer id is its Tributary ed25519 identity", async () => {
    const keys = Ed25519Keys.generate();
    const h = await startP2pHost({ seed: keys.seed() });
    hosts.push(h);
    expect(Buffer.from(h.peerId.publicKey!.raw).toString('hex')).toBe(keys.publicKeyHex);
  });

  it('direct TCP: activations arrive through the WireReader checks, bit for bit', async () => {
    const [a, b] = [await host(), await host()];
    const inbox = receiver(b);
    const addr = b
      .getMultiaddrs()
      .find((m) => m.toString().includes('/tcp/') && !m.toString().includes('/ws'))!;
    const stream = await a.dialProtocol(addr, TENSOR_PROTOCOL);
    const sent = activations();
    await sendTensorMessage<NodeMessage>(stream, 1, { type: 'result', taskId: 1, busyMs: 1 }, [sent]);
    await stream.close();
    await inbox.done;
    expect(inbox.errors).toEqual([]);
    expect(inbox.messages).toHaveLength(1);
    expect(
      Buffer.from(inbox.messages[0]!.tensors[0]!.data.buffer).equals(Buffer.from(sent.data.buffer)),
    ).toBe(true);
  });

  it('a frame of the wrong shape is refused as on the WebSocket, and the stream is reset', async () => {
    const [a, b] = [await host(), await host()];
    const inbox = receiver(b);
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, TENSOR_PROTOCOL);
    const wrong: Tensor = { dtype: 'f32', shape: [2, 16, 31], data: new Float32Array(2 * 16 * 31) };
    await sendTensorMessage<NodeMessage>(stream, 1, { type: 'result', taskId: 1, busyMs: 1 }, [wrong]);
    await inbox.done;
    expect(inbox.messages).toHaveLength(0);
    expect(inbox.errors[0]).toMatchObject({ name: 'ProtocolError', code: 'bad-shape' });
  });

  it('a relay-only peer is reached through a circuit relay v2, and the connection shows it is relayed', async () => {
    const relay = await host({ relayServer: true });
    // C listens only through the relay: no address of its own that anyone could dial.
    const c = await host({ listen: ['/p2p-circuit'] });
    await c.dial(relay.getMultiaddrs()[0]!);
    const circuit = await new Promise<Multiaddr>((resolve) => {
      const check = (): void => {
        const found = c.getMultiaddrs().find((m) => m.toString().includes('/p2p-circuit'));
        if (found) resolve(found);
        else setTimeout(check, 50);
      };
      check();
    });
    const inbox = receiver(c);
    const a = await host();
    const stream = await a.dialProtocol(circuit, TENSOR_PROTOCOL, {
      runOnLimitedConnection: true,
    });
    const connection = a.getConnections(c.peerId)[0]!;
    expect(connection.remoteAddr.toString()).toContain('/p2p-circuit');
    await sendTensorMessage<NodeMessage>(stream, 1, { type: 'result', taskId: 1, busyMs: 1 }, [
      activations(),
    ]);
    await stream.close();
    await inbox.done;
    expect(inbox.errors).toEqual([]);
    expect(inbox.messages).toHaveLength(1);
  });
});
