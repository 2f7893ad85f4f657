import type { Libp2p, Stream } from '@libp2p/interface';
import { afterEach, describe, expect, it } from 'vitest';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import type { LinkShape } from '../../main/node/link-shaping.js';
import { TENSOR_PROTOCOL, readTensorMessages } from '../../main/node/p2p.js';
import { startP2pHost } from '../../shared/p2p/host.js';
import { PeerRefused, PeerTensors, relayAddress } from '../../main/node/peer-tensors.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import { peerTensorSchema, type PeerTensor } from '../../shared/protocol/messages.js';
import { WireReader, defaultWireLimits, type TensorSpec } from '../../shared/protocol/wire.js';
import { quiet } from './helpers.js';

const SPEC: TensorSpec = { dtype: 'f32', shape: [8, 128, 64] };
const tensor = (fill: number): Tensor => ({
  dtype: 'f32',
  shape: SPEC.shape,
  data: new Float32Array(8 * 128 * 64).fill(fill),
});
const unit = (microBatch: number, direction: 'forward' | 'backward' = 'forward') => ({
  step: 0,
  attempt: 0,
  microBatch,
  direction,
});

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

async function peers(link?: LinkShape): Promise<PeerTensors> {
  const p = await PeerTensors.start({
    seed: Ed25519Keys.generate().seed(),
    link,
    spec: () => SPEC,
    log: quiet,
  });
  stops.push(() => p.stop());
  return p;
}

/** A bare libp2p host serving the tensor protocol that counts the streams it is sent and reads them. */
async function countingReceiver(onStream: (stream: Stream, index: number) => void = () => {}): Promise<{
  host: Libp2p;
  streams: number;
  received: number[];
}> {
  const host = await startP2pHost({ seed: Ed25519Keys.generate().seed() });
  stops.push(async () => {
    await host.stop();
  });
  const state = { host, streams: 0, received: [] as number[] };
  await host.handle(TENSOR_PROTOCOL, async (stream) => {
    onStream(stream, state.streams++);
    const reader = new WireReader<PeerTensor>(peerTensorSchema, () => [SPEC], defaultWireLimits);
    try {
      for await (const { message } of readTensorMessages(stream, reader))
        state.received.push(message.microBatch);
    } catch {
      // A stream this test cut off.
    }
  });
  return state;
}

const addressOf = (host: Libp2p) => ({
  peerId: host.peerId.toString(),
  addrs: host.getMultiaddrs().map((m) => m.toString()),
});

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('tensor streams between neighbours', () => {
  it('every tensor to a neighbour rides one long-lived stream, in order', async () => {
    const sender = await peers();
    const receiver = await countingReceiver();
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        sender.send(addressOf(receiver.host), { type: 'tensor', ...unit(i) }, tensor(i)),
      ),
    );
    await until('all 40 tensors arrived', () => receiver.received.length === 40);
    expect(receiver.streams).toBe(1);
    expect(receiver.received).toEqual(Array.from({ length: 40 }, (_, i) => i));
  });

  it('a stream that fails is reopened and the next tensors arrive on a new one', async () => {
    const sender = await peers();
    let first: Stream | null = null;
    const receiver = await countingReceiver((stream, index) => {
      if (index === 0) first = stream;
    });
    const to = addressOf(receiver.host);
    await sender.send(to, { type: 'tensor', ...unit(0) }, tensor(0));
    await until('the first tensor arrived', () => receiver.received.length === 1);
    first!.abort(new Error('cut off by the test'));
    // The reset reaches the sender, whose next tensor finds its stream gone.
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (let i = 1; i <= 3; i++) await sender.send(to, { type: 'tensor', ...unit(i) }, tensor(i));
    await until('the later tensors arrived', () => receiver.received.length === 4);
    expect(receiver.streams).toBe(2);
    expect(receiver.received).toEqual([0, 1, 2, 3]);
  });

  it('tensors both ways between two nodes arrive bit for bit, and each side sees a direct route', async () => {
    const [a, b] = [await peers(), await peers()];
    await a.send(b.address, { type: 'tensor', ...unit(0) }, tensor(0.25));
    await b.send(a.address, { type: 'tensor', ...unit(0, 'backward') }, tensor(-2));
    const forward = await b.receive(a.address.peerId, unit(0), 10_000);
    const backward = await a.receive(b.address.peerId, unit(0, 'backward'), 10_000);
    expect(Array.from(new Set(forward.data))).toEqual([0.25]);
    expect(Array.from(new Set(backward.data))).toEqual([-2]);
    expect(a.links[b.address.peerId]).toEqual({ in: 'direct', out: 'direct' });
    expect(b.links[a.address.peerId]).toEqual({ in: 'direct', out: 'direct' });
  });

  it('a tensor that never comes is refused after the wait; later tensors still arrive', async () => {
    const [a, b] = [await peers(), await peers()];
    const started = performance.now();
    await expect(b.receive(a.address.peerId, unit(0), 300)).rejects.toBeInstanceOf(PeerRefused);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    await a.send(b.address, { type: 'tensor', ...unit(0) }, tensor(1));
    await a.send(b.address, { type: 'tensor', ...unit(1) }, tensor(2));
    const next = await b.receive(a.address.peerId, unit(1), 10_000);
    expect(next.data[0]).toBe(2);
  });

  it('a shaped host is dialled through its link: each tensor round trip costs two latencies and serialisations', async () => {
    const link: LinkShape = { bitsPerSecond: 80e6, latencyMs: 40 };
    const a = await PeerTensors.start({
      seed: Ed25519Keys.generate().seed(),
      listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws'],
      link,
      spec: () => SPEC,
      log: quiet,
    });
    stops.push(() => a.stop());
    const b = await peers(link);
    // Only the proxy's port is announced, not the WebSocket listener's either: no neighbour can go round the link.
    expect(a.address.addrs).toHaveLength(1);
    expect(a.address.addrs[0]).not.toContain('/ws');
    const serialisationMs = (8 * 128 * 64 * 4 * 8 * 1000) / link.bitsPerSecond!;
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      await a.send(b.address, { type: 'tensor', ...unit(i) }, tensor(i));
      const there = await b.receive(a.address.peerId, unit(i), 10_000);
      await b.send(a.address, { type: 'tensor', ...unit(i, 'backward') }, there);
      await a.receive(b.address.peerId, unit(i, 'backward'), 10_000);
      expect(performance.now() - started).toBeGreaterThanOrEqual(2 * (link.latencyMs + serialisationMs));
    }
  });
});

describe("which of the coordinator relay's addresses a node listens through", () => {
  const id = '12D3KooWEDc9TzDp7RgrjTCBYmaFxpEjNMgpAY4HcN9YvJt8GFk5';
  // A relay listening on every interface reports one address per interface, loopback first.
  const addrs = [
    `/ip4/127.0.0.1/tcp/7701/p2p/${id}`,
    `/ip4/10.0.0.5/tcp/7701/p2p/${id}`,
    `/ip4/192.168.1.20/tcp/7701/p2p/${id}`,
  ];
  it('the one on the host the node reaches the coordinator at', () => {
    expect(relayAddress(addrs, '192.168.1.20')).toBe(addrs[2]);
    expect(relayAddress(addrs, '127.0.0.1')).toBe(addrs[0]);
  });
  it('else the first not on loopback, else the first', () => {
    expect(relayAddress(addrs, 'coordinator.example.org')).toBe(addrs[1]);
    expect(relayAddress([addrs[0]!], 'coordinator.example.org')).toBe(addrs[0]);
    expect(relayAddress([], undefined)).toBeNull();
  });
});
