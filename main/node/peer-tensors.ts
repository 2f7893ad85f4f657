import type { Libp2p } from '@libp2p/interface';
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
import { WireReader, defaultWireLimits, type TensorSpec } from '../../shared/protocol/wire.js';
import { TENSOR_PROTOCOL, readTensorMessages, sendTensorMessage, startP2pHost } from './p2p.js';

/** The attempt a waiting task belonged to was aborted: its input will never come, and it is not wanted. */
export class InputCancelled extends Error {}

interface Waiter {
  attempt: number;
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

const key = (from: string, m: Omit<PeerTensor, 'v' | 'id' | 'tensors' | 'type'>): string =>
  `${from}/${m.step}/${m.attempt}/${m.microBatch}/${m.direction}`;

/**
 * A node's peer-to-peer data plane: its libp2p host, one stream per boundary tensor sent, and an inbox of
 * tensors received, keyed by their sender's peer id (authenticated by Noise), step, attempt, micro-batch and
 * direction, so a task takes only the tensor of the peer the coordinator named.
 */
export class PeerTensors {
  private readonly inbox = new Map<string, { attempt: number; tensor: Tensor }>();
  private readonly waiters = new Map<string, Waiter>();
  /** Attempts up to this one were aborted: a task of theirs still queued must not wait for its input. */
  private aborted = -1;

  private constructor(
    private readonly host: Libp2p,
    private readonly log: Logger,
  ) {}

  static async start(
    seed: Uint8Array,
    listen: string[] | undefined,
    spec: (direction: Direction) => TensorSpec,
    log: Logger,
  ): Promise<PeerTensors> {
    const host = await startP2pHost({ seed, listen });
    const peers = new PeerTensors(host, log);
    await host.handle(TENSOR_PROTOCOL, async (stream, connection) => {
      const from = connection.remotePeer.toString();
      const reader = new WireReader<PeerTensor>(
        peerTensorSchema,
        (m) => [spec(m.direction)],
        defaultWireLimits,
      );
      try {
        for await (const { message, tensors } of readTensorMessages(stream, reader))
          peers.deliver(key(from, message), message.attempt, tensors[0]!);
        // Closed from this end too, or the stream stays half open and counts against the connection's limit.
        await stream.close();
      } catch (err) {
        log.warn({ from, err: (err as Error).message }, 'a peer sent a bad tensor stream; refused');
      }
    });
    return peers;
  }

  /** The peer id and the multiaddrs the coordinator passes to the neighbours. */
  get address(): P2pAddress {
    const addrs = this.host.getMultiaddrs().map((m) => m.toString());
    return { peerId: this.host.peerId.toString(), addrs: addrs.slice(0, 8) };
  }

  private deliver(k: string, attempt: number, tensor: Tensor): void {
    if (attempt <= this.aborted) return;
    const waiter = this.waiters.get(k);
    if (waiter) {
      this.waiters.delete(k);
      waiter.resolve(tensor);
    } else this.inbox.set(k, { attempt, tensor });
  }

  /** Sends one boundary tensor to `to` on a stream of its own, and waits until it is written. */
  async send(to: P2pAddress, message: Outgoing<PeerTensor>, tensor: Tensor): Promise<void> {
    const stream = await this.host.dialProtocol(
      to.addrs.map((a) => multiaddr(a)),
      TENSOR_PROTOCOL,
    );
    await sendTensorMessage<PeerTensor>(stream, 0, message, [tensor]);
    await stream.close();
  }

  /** The tensor `from` sent for this micro-batch, as soon as it is here. */
  receive(from: string, m: Omit<PeerTensor, 'v' | 'id' | 'tensors' | 'type'>): Promise<Tensor> {
    if (m.attempt <= this.aborted)
      return Promise.reject(new InputCancelled(`attempt ${m.attempt} was aborted`));
    const k = key(from, m);
    const ready = this.inbox.get(k);
    if (ready) {
      this.inbox.delete(k);
      return Promise.resolve(ready.tensor);
    }
    return new Promise((resolve, reject) => this.waiters.set(k, { attempt: m.attempt, resolve, reject }));
  }

  /** Drops every tensor and wait of attempts up to `attempt` (they were aborted). */
  cancel(attempt: number): void {
    this.aborted = Math.max(this.aborted, attempt);
    for (const [k, entry] of this.inbox) if (entry.attempt <= attempt) this.inbox.delete(k);
    for (const [k, waiter] of this.waiters) {
      if (waiter.attempt > attempt) continue;
      this.waiters.delete(k);
      waiter.reject(new InputCancelled(`attempt ${waiter.attempt} was aborted`));
    }
  }

  async stop(): Promise<void> {
    this.cancel(Number.MAX_SAFE_INTEGER);
    await this.host.stop();
    this.log.debug('libp2p host stopped');
  }
}
