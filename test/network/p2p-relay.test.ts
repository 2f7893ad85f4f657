import type { Libp2p } from '@libp2p/interface';
import { afterAll, describe, expect, it } from 'vitest';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { startP2pHost } from '../../shared/p2p/host.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import { startCoordinator, startNode, tamperPeerTensors, tempDir, tinyConfig } from './helpers.js';
import { until } from './processes.js';

const { dir, cleanup } = tempDir('tributary-p2p-relay-');
afterAll(cleanup);

/** Every close the coordinator sent this node, with its reason. */
function closes(node: NodeRuntime): string[] {
  const seen: string[] = [];
  node.on('disconnected', (e: { code: number; reason: string }) => seen.push(`${e.code} ${e.reason}`));
  return seen;
}

/**
 * Makes `node` announce, in its join, a direct address that leads nowhere (a port nothing listens on) and
 * of its own addresses only those `keep` returns: it can dial out, but no neighbour can dial it directly.
 * (A connection it dialled itself would still carry tensors back.)
 */
function unreachableDirectly(node: NodeRuntime, keep: (addrs: string[]) => string[] = () => []): void {
  tamperPeerTensors(node, (peers) => {
    const { peerId, addrs } = peers.address;
    const announced = { peerId, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${peerId}`, ...keep(addrs)] };
    Object.defineProperty(peers, 'address', { get: () => announced });
  });
}

describe('peer to peer past what cannot be dialled, and past what breaks the protocol', () => {
  it('a node nobody can dial trains through a circuit relay v2, and its status says its tensors are relayed', async () => {
    const relay: Libp2p = await startP2pHost({ seed: Ed25519Keys.generate().seed(), relayServer: true });
    const coordinator = await startCoordinator(tinyConfig({ steps: 3, dataPlane: 'p2p' }), `${dir}/relay`);
    const direct = startNode(coordinator.url, 'cpu');
    // Stage 1 dials first: the forward tensors open the relayed connection.
    await until('the direct node has stage 1', () => direct.status.stage !== null, 60_000);
    // Its only address is a reservation on the relay: no listener of its own.
    const hidden = startNode(coordinator.url, 'cpu', {
      p2pListen: [`${relay.getMultiaddrs()[0]!.toString()}/p2p-circuit`],
    });
    try {
      await coordinator.finished;
      expect(coordinator.status()).toMatchObject({ state: 'done', step: 3, relayedBytes: 0 });
      // Tensors to it go through the relay; it can still dial its neighbour itself.
      expect(hidden.status.peerLinks).toEqual({
        [direct.status.p2p!.peerId]: { in: 'relay', out: 'direct' },
      });
      expect(direct.status.peerLinks).toEqual({
        [hidden.status.p2p!.peerId]: { in: 'direct', out: 'relay' },
      });
      expect(hidden.status.peerBytes).toBeGreaterThan(0);
    } finally {
      await Promise.all([direct.stop(), hidden.stop()]);
      await coordinator.close();
      await relay.stop();
    }
  }, 120_000);

  it('a tensor of the wrong shape over libp2p: no one is dropped on a word the coordinator cannot check; tensors between the two go through it from then on, and the run goes on', async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ steps: 2, dataPlane: 'p2p', banMs: 600_000 }),
      `${dir}/bad-frame`,
    );
    const liar = startNode(coordinator.url, 'cpu');
    const liarCloses = closes(liar);
    // The lie on the libp2p stream only: the summary the coordinator gets is honest, and so is what the
    // liar hands back when asked, so the coordinator cannot tell which of the two is lying.
    tamperPeerTensors(liar, (peers) => {
      const send = peers.send.bind(peers);
      peers.send = (to, message, _tensor: Tensor) =>
        send(to, message, { dtype: 'f32', shape: [1, 2, 3], data: new Float32Array(6) });
    });
    await until('the liar is placed on stage 1', () => liar.status.stage !== null, 60_000);
    const honest = [startNode(coordinator.url, 'cpu'), startNode(coordinator.url, 'cpu')];
    const honestCloses = honest.map(closes);
    try {
      await coordinator.finished;
      expect([...liarCloses, ...honestCloses.flat()]).toEqual([]);
      const status = coordinator.status();
      expect(status).toMatchObject({ state: 'done', step: 2 });
      // Whole boundary tensors: the one asked back from the liar when its consumer reported it, and those
      // between the pair after (the other replica's stay peer to peer).
      const tensorBytes = 2 * 16 * 32 * 4;
      expect(status.relayedBytes).toBeGreaterThan(tensorBytes);
      expect(status.relayedBytes % tensorBytes).toBe(0);
      const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
      // One pair per honest node the liar sent to (placement may move an honest node onto stage 2 later).
      expect(metrics).toMatch(/^tributary_relayed_pairs_total\{reason="dispute"\} [12]$/m);
    } finally {
      await Promise.all([liar, ...honest].map((n) => n.stop()));
      await coordinator.close();
    }
  }, 120_000);

  it('a node its neighbours cannot reach: the first failed send says so, tensors between the two go through the coordinator, and the run finishes with no one dropped', async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ steps: 3, dataPlane: 'p2p', banMs: 600_000 }),
      `${dir}/unreachable`,
    );
    const first = startNode(coordinator.url, 'cpu');
    await until('the first node is placed on stage 1', () => first.status.stage !== null, 60_000);
    // Stage 2 can dial out, but the address it announces leads nowhere (a port nothing listens on): its
    // producer's first tensor finds no way in. (A connection it dialled itself would carry tensors back.)
    const behindNat = startNode(coordinator.url, 'cpu');
    unreachableDirectly(behindNat);
    const others = [first];
    const all = [behindNat, ...others];
    const seen = all.map(closes);
    try {
      await coordinator.finished;
      expect(seen.flat()).toEqual([]);
      const status = coordinator.status();
      expect(status).toMatchObject({ state: 'done', step: 3, relayedPairs: 1 });
      expect(status.relayedBytes).toBeGreaterThan(0);
      const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
      // Settled by the sender's report at once, not by the consumer's wait running out (a dispute).
      expect(metrics).toMatch(/^tributary_relayed_pairs_total\{reason="unreachable"\} 1$/m);
      expect(metrics).not.toMatch(/reason="dispute"/);
    } finally {
      await Promise.all(all.map((n) => n.stop()));
      await coordinator.close();
    }
  }, 120_000);

  it("with the coordinator's circuit relay, a node no neighbour can dial directly is still reached peer to peer through it, and its status says so", async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ steps: 3, dataPlane: 'p2p', banMs: 600_000 }),
      `${dir}/coordinator-relay`,
      { p2pRelay: ['/ip4/127.0.0.1/tcp/0'] },
    );
    const first = startNode(coordinator.url, 'cpu');
    await until('the first node is placed on stage 1', () => first.status.stage !== null, 60_000);
    const behindNat = startNode(coordinator.url, 'cpu');
    unreachableDirectly(behindNat, (addrs) => addrs.filter((a) => a.includes('/p2p-circuit')));
    // What the agent is told (follow-run.ts): each neighbour's route as it becomes known.
    const told: Array<Record<string, { in?: string; out?: string }>> = [];
    behindNat.on('peerLinks', (links: (typeof told)[number]) => told.push(links));
    const all = [first, behindNat];
    const seen = all.map(closes);
    try {
      await coordinator.finished;
      expect(seen.flat()).toEqual([]);
      // No pair fell back to the coordinator's WebSocket: the tensors went through its libp2p relay.
      expect(coordinator.status()).toMatchObject({
        state: 'done',
        step: 3,
        relayedBytes: 0,
        relayedPairs: 0,
      });
      expect(behindNat.status.peerLinks?.[first.status.p2p!.peerId]?.in).toBe('relay');
      expect(told.at(-1)?.[first.status.p2p!.peerId]?.in).toBe('relay');
      expect(first.status.peerLinks?.[behindNat.status.p2p!.peerId]?.out).toBe('relay');
    } finally {
      await Promise.all(all.map((n) => n.stop()));
      await coordinator.close();
    }
  }, 120_000);

  it("the coordinator's circuit relay serves the run's nodes only: a stranger's reservation is refused", async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ steps: 1, dataPlane: 'p2p' }),
      `${dir}/relay-stranger`,
      { p2pRelay: ['/ip4/127.0.0.1/tcp/0'] },
    );
    const relay = coordinator.relayAddrs()[0]!;
    // A stranger asks to listen only through it (a node, whose reservation the test above shows held, also
    // listens directly and goes on without one that is refused).
    await expect(
      startP2pHost({ seed: Ed25519Keys.generate().seed(), listen: [`${relay}/p2p-circuit`] }),
    ).rejects.toThrow(/p2p-circuit/);
    await coordinator.close();
  }, 60_000);
});
