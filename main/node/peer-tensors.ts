import type { Connection, Libp2p, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import type { Direction } from '../../shared/protocol/codec.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import {
  peerTensorSchema,
  type Outgoing,
  type P2pAddress,
  type PeerTensor,
} from '../../shared/protocol/messages.js';
import { ProtocolError, WireReader, defaultWireLimits, type TensorSpec } from '../../shared/protocol/wire.js';
import { ShapedProxy, unshaped, type LinkShape } from './link-shaping.js';
import { DEFAULT_LISTEN, isCircuit, startP2pHost } from '../../shared/p2p/host.js';
import { TENSOR_PROTOCOL, readTensorMessages, sendTensorMessage } from './p2p.js';

/** The attempt a waiting task belonged to was aborted: its input will never come, and it is not wanted. */
export class InputCancelled extends Error {}

/**
 * The peer broke the tensor protocol (a frame the WireReader refused), or its tensor did not come in time:
 * its sender is to be reported.
 */
export class PeerRefused extends Error {}

interface Waiter {
  from: string;
  attempt: number;
  timer: NodeJS.Timeout;
  resolve(tensor: Tensor): void;
  reject(error: Error): void;
}

/** What the coordinator needs to refuse a tensor it never sees: computed by the sender from the raw values. */
export function summarize(data: Float32Array): { finite: boolean; maxAbs: number } {
  let maxAbs = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]!);
    if (!Number.isFinite(a)) return { finite: false, maxAbs: 0 };
    if (a > maxAbs) maxAbs = a;
  }
  return { finite: true, maxAbs };
}

/** How tensors travel to or from a neighbour: straight between the two hosts, or through a circuit relay. */
export type PeerRoute = 'direct' | 'relay';

/** How many of these neighbours tensors reach or leave only through a relay. */
export function relayedNeighbours(links: Readonly<Record<string, PeerLink>>): number {
  return Object.values(links).filter((l) => l.in === 'relay' || l.out === 'relay').length;
}

/** The routes the latest tensor stream to (`out`) and from (`in`) a neighbour took. */
export interface PeerLink {
  in?: PeerRoute;
  out?: PeerRoute;
}

export interface PeerTensorsOptions {
  /** The node's ed25519 seed: the libp2p peer id. */
  seed: Uint8Array;
  /**
   * Where to listen; default TCP and WebSockets on 127.0.0.1. `<relay multiaddr>/p2p-circuit` listens through
   * that circuit relay v2 server (alone: a node nobody can dial directly).
   */
  listen?: string[];
  /**
   * The coordinator's circuit relay (its multiaddrs): the host also listens through it, so a neighbour that
   * cannot dial it directly still reaches it peer to peer.
   */
  relay?: string[];
  /** The coordinator's host name or address, as the node dials it: picks which of the relay's addresses. */
  coordinatorHost?: string;
  /**
   * Shape every connection a neighbour dials to this node (a ShapedProxy in front of the TCP listener,
   * which is then the only address announced), as `tributary local --link` shapes the coordinator's.
   */
  link?: LinkShape;
  /** Told when the route to or from a neighbour is first known or changes. */
  onLinks?: (links: Readonly<Record<string, PeerLink>>) => void;
  /** The dtype and shape of the boundary tensor each direction carries. */
  spec(direction: Direction): TensorSpec;
  log: Logger;
}

const key = (from: string, m: Omit<PeerTensor, 'v' | 'id' | 'tensors' | 'type'>): string =>
  `${from}/${m.step}/${m.attempt}/${m.microBatch}/${m.direction}`;

/**
 * Which of the relay's addresses (its listeners', one per interface when it listens on all) to listen
 * through: one on the host this node reaches the coordinator at, else one not on loopback, else the first.
 */
export function relayAddress(addrs: string[], coordinatorHost: string | undefined): string | null {
  const host = (a: string): string | undefined => /^\/(?:ip4|ip6|dns4|dns6|dns)\/([^/]+)/.exec(a)?.[1];
  const loopback = (h: string | undefined): boolean => h === 'localhost' || /^(127\.|::1$)/.test(h ?? '');
  return (
    addrs.find((a) => coordinatorHost !== undefined && host(a) === coordinatorHost) ??
    addrs.find((a) => !loopback(host(a))) ??
    addrs[0] ??
    null
  );
}

const routeOf = (connection: Connection): PeerRoute =>
  isCircuit(connection.remoteAddr.toString()) ? 'relay' : 'direct';

/** How long a host listening through a relay may take to hold a reservation there. */
const RESERVATION_MS = 15_000;

/**
 * A node's peer-to-peer data plane: its libp2p host, one long-lived tensor stream to each neighbour it sends
 * to (opened on the first tensor, reopened after a failure), and an inbox of tensors received, keyed by their
 * sender's peer id (authenticated by Noise), step, attempt, micro-batch and direction, so a task takes only the
 * tensor of the peer the coordinator named.
 */
export class PeerTensors {
  private readonly inbox = new Map<string, { attempt: number; tensor: Tensor }>();
  private readonly waiters = new Map<string, Waiter>();
  /** The open stream to each neighbour. */
  private readonly outbound = new Map<string, Promise<Stream>>();
  /** The last send to each neighbour: sends are chained so one message's records never interleave. */
  private readonly sending = new Map<string, Promise<void>>();
  /** Neighbours whose stream broke the protocol, with why, until a task taking their input reports them. */
  private readonly refused = new Map<string, string>();
  /** Attempts up to this one were aborted: a task of theirs still queued must not wait for its input. */
  private aborted = -1;
  /** By neighbour peer id: for the node's status. */
  readonly links: Record<string, PeerLink> = {};

  private constructor(
    private readonly host: Libp2p,
    private readonly proxy: ShapedProxy | null,
    private readonly log: Logger,
    private readonly onLinks: PeerTensorsOptions['onLinks'],
  ) {}

  static async start(options: PeerTensorsOptions): Promise<PeerTensors> {
    const { link = unshaped, log } = options;
    const shaped = link.bitsPerSecond !== null || link.latencyMs > 0;
    // Behind the proxy only its port is announced (the listener's own is rewritten to it, any other
    // listener left out), so no neighbour can go round the link.
    // (A neighbour that dials through the coordinator's relay is not shaped: a fallback, not the path.)
    let proxyPort: { from: string; to: string } | null = null;
    const listen = options.listen ?? (shaped ? ['/ip4/127.0.0.1/tcp/0'] : DEFAULT_LISTEN);
    const relay = options.relay ? relayAddress(options.relay, options.coordinatorHost) : null;
    const viaRelay = relay ? [`${relay}/p2p-circuit`] : [];
    const host = await startP2pHost({
      seed: options.seed,
      listen: [...listen, ...viaRelay],
      announceFilter: (addrs) => {
        const via = proxyPort;
        if (!via) return addrs;
        return addrs
          .map((a) => a.toString())
          .filter((a) => a.includes(via.from) || isCircuit(a))
          .map((a) => multiaddr(isCircuit(a) ? a : a.replace(via.from, via.to)));
      },
    });
    let proxy: ShapedProxy | null = null;
    if (shaped) {
      const tcp = host
        .getMultiaddrs()
        .find((a) => /\/tcp\/\d+\/p2p\//.test(a.toString()) && !isCircuit(a.toString()));
      const port = tcp ? Number(/\/tcp\/(\d+)\//.exec(tcp.toString())![1]) : NaN;
      if (!tcp || !Number.isFinite(port)) {
        await host.stop();
        throw new Error('a shaped libp2p host needs a TCP listen address on 127.0.0.1');
      }
      proxy = await ShapedProxy.start({ port }, link);
      proxyPort = { from: `/tcp/${port}/`, to: `/tcp/${proxy.port}/` };
    }
    const peers = new PeerTensors(host, proxy, log, options.onLinks);
    await host.handle(TENSOR_PROTOCOL, (stream, connection) => peers.serve(stream, connection, options), {
      runOnLimitedConnection: true,
    });
    await peers.reachable(viaRelay.length > 0);
    return peers;
  }

  /** Reads one neighbour's stream for as long as it stays open; a violation refuses the stream and its sender. */
  private async serve(stream: Stream, connection: Connection, options: PeerTensorsOptions): Promise<void> {
    const from = connection.remotePeer.toString();
    this.setRoute(from, 'in', routeOf(connection));
    const reader = new WireReader<PeerTensor>(
      peerTensorSchema,
      (m) => [options.spec(m.direction)],
      defaultWireLimits,
    );
    try {
      for await (const { message, tensors } of readTensorMessages(stream, reader))
        this.deliver(from, message, tensors[0]!);
      // Closed from this end too, or the stream stays half open and counts against the connection's limit.
      await stream.close();
    } catch (err) {
      // A stream cut off (the peer left, the connection dropped) is no fault of the sender's.
      if (!(err instanceof ProtocolError)) {
        this.log.debug({ from, err: (err as Error).message }, 'a tensor stream ended');
        return;
      }
      const reason = `protocol violation on the tensor stream: ${err.message}`;
      this.log.warn({ from, reason }, 'a peer sent a bad tensor stream; refused');
      this.refuse(from, reason);
    }
  }

  /**
   * A host listening only through a relay has no address until its reservation is held. One that also
   * listens through the coordinator's relay waits for that reservation too, but goes on without it (direct
   * addresses only, said in the log) rather than not at all.
   */
  private async reachable(throughRelay: boolean): Promise<void> {
    const deadline = Date.now() + RESERVATION_MS;
    for (;;) {
      const addrs = this.host.getMultiaddrs().map((a) => a.toString());
      if (addrs.length > 0 && (!throughRelay || addrs.some(isCircuit))) return;
      if (Date.now() > deadline) {
        if (addrs.length > 0) {
          this.log.warn("no reservation on the coordinator's relay; announcing direct addresses only");
          return;
        }
        await this.stop();
        throw new Error(`no libp2p address to announce after ${RESERVATION_MS} ms (relay reservation?)`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** The peer id and the multiaddrs the coordinator passes to the neighbours. */
  get address(): P2pAddress {
    const addrs = this.host.getMultiaddrs().map((m) => m.toString());
    return { peerId: this.host.peerId.toString(), addrs: addrs.slice(0, 8) };
  }

  private setRoute(peer: string, way: keyof PeerLink, route: PeerRoute): void {
    const link = (this.links[peer] ??= {});
    if (link[way] === route) return;
    link[way] = route;
    this.onLinks?.(this.links);
  }

  private deliver(from: string, m: PeerTensor, tensor: Tensor): void {
    if (m.attempt <= this.aborted) return;
    const k = key(from, m);
    const waiter = this.waiters.get(k);
    if (waiter) {
      this.waiters.delete(k);
      clearTimeout(waiter.timer);
      waiter.resolve(tensor);
    } else this.inbox.set(k, { attempt: m.attempt, tensor });
  }

  private refuse(from: string, reason: string): void {
    let reported = false;
    for (const [k, waiter] of this.waiters) {
      if (waiter.from !== from) continue;
      this.waiters.delete(k);
      clearTimeout(waiter.timer);
      waiter.reject(new PeerRefused(reason));
      reported = true;
    }
    if (!reported) this.refused.set(from, reason);
  }

  /**
   * Sends one boundary tensor to `to` on the stream kept open to it, and waits until it is handed to the
   * connection. A stream that fails is dropped and a new one opened, once.
   */
  async send(to: P2pAddress, message: Outgoing<PeerTensor>, tensor: Tensor): Promise<void> {
    const write = async (): Promise<void> => {
      try {
        await sendTensorMessage<PeerTensor>(await this.stream(to), 0, message, [tensor]);
      } catch (err) {
        this.log.debug({ to: to.peerId, err: (err as Error).message }, 'tensor stream failed; reopening');
        this.drop(to.peerId);
        await sendTensorMessage<PeerTensor>(await this.stream(to), 0, message, [tensor]);
      }
    };
    const queued = (this.sending.get(to.peerId) ?? Promise.resolve()).then(write);
    // A failed send must not fail the ones queued behind it.
    const settled = queued.catch(() => {});
    this.sending.set(to.peerId, settled);
    void settled.then(() => {
      if (this.sending.get(to.peerId) === settled) this.sending.delete(to.peerId);
    });
    return queued;
  }

  /** The open stream to `to`, opened now if there is none. */
  private stream(to: P2pAddress): Promise<Stream> {
    const open = this.outbound.get(to.peerId);
    if (open) return open;
    const stream = (async (): Promise<Stream> => {
      const connection = await this.host.dial(to.addrs.map((a) => multiaddr(a)));
      const opened = await connection.newStream(TENSOR_PROTOCOL, { runOnLimitedConnection: true });
      this.setRoute(to.peerId, 'out', routeOf(connection));
      return opened;
    })();
    this.outbound.set(to.peerId, stream);
    // A stream that never opened is forgotten, so the next send dials again.
    stream.catch(() => this.drop(to.peerId, stream));
    return stream;
  }

  private drop(peerId: string, only?: Promise<Stream>): void {
    const stream = this.outbound.get(peerId);
    if (!stream || (only && stream !== only)) return;
    this.outbound.delete(peerId);
    void stream.then(
      (s) => s.abort(new Error('tensor stream dropped')),
      () => {},
    );
  }

  /**
   * The tensor `from` sent for this micro-batch, as soon as it is here. Rejects with PeerRefused when `from`
   * broke the tensor protocol (once per violation) or nothing came within `timeoutMs` (the sender told the
   * coordinator it had sent it before this node was given the task), with InputCancelled when the attempt
   * was aborted.
   */
  receive(
    from: string,
    m: Omit<PeerTensor, 'v' | 'id' | 'tensors' | 'type'>,
    timeoutMs: number,
  ): Promise<Tensor> {
    if (m.attempt <= this.aborted)
      return Promise.reject(new InputCancelled(`attempt ${m.attempt} was aborted`));
    const k = key(from, m);
    const ready = this.inbox.get(k);
    if (ready) {
      this.inbox.delete(k);
      return Promise.resolve(ready.tensor);
    }
    const refusal = this.refused.get(from);
    if (refusal !== undefined) {
      this.refused.delete(from);
      return Promise.reject(new PeerRefused(refusal));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(k);
        reject(new PeerRefused(`no tensor came from the peer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(k, { from, attempt: m.attempt, timer, resolve, reject });
    });
  }

  /** Drops every tensor and wait of attempts up to `attempt` (they were aborted). */
  cancel(attempt: number): void {
    this.aborted = Math.max(this.aborted, attempt);
    for (const [k, entry] of this.inbox) if (entry.attempt <= attempt) this.inbox.delete(k);
    for (const [k, waiter] of this.waiters) {
      if (waiter.attempt > attempt) continue;
      this.waiters.delete(k);
      clearTimeout(waiter.timer);
      waiter.reject(new InputCancelled(`attempt ${waiter.attempt} was aborted`));
    }
  }

  async stop(): Promise<void> {
    this.cancel(Number.MAX_SAFE_INTEGER);
    for (const peerId of [...this.outbound.keys()]) this.drop(peerId);
    await this.host.stop();
    await this.proxy?.close();
    this.log.debug('libp2p host stopped');
  }
}
