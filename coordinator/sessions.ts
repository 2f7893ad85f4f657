import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { stageParamCount } from '../gpu/model/params.js';
import { authChallengeBytes, coordinatorProofBytes } from '../shared/protocol/auth.js';
import { Channel } from '../shared/protocol/channel.js';
import type { Direction } from '../shared/protocol/codec.js';
import type { Tensor } from '../shared/protocol/frame.js';
import {
  DAY_MS,
  nodeMessageSchema,
  type CoordinatorMessage,
  type NodeMessage,
  type Outgoing,
} from '../shared/protocol/messages.js';
import {
  ProtocolError,
  WireReader,
  encodeShared,
  type Received,
  type TensorSpec,
  type WireLimits,
} from '../shared/protocol/wire.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { VerifySignature } from './receipts.js';
import { Peer, type Awaiting } from './peer.js';
import type { RunConfig, RunShape } from './run-config.js';
import { SendPacer } from './send-pacer.js';
import type { CoordinatorStore } from './store.js';

export class PeerLost extends Error {}

/** Sends a request to a peer and resolves with its reply (`kind` and `key` must match); rejects when it leaves. */
export type Request = (
  peer: Peer,
  kind: Awaiting['kind'],
  key: number,
  spec: TensorSpec[],
  send: () => void,
) => Promise<Received<NodeMessage>>;

/** A connection that has not proven its key by then is closed, so idle sockets cannot pile up. */
const AUTH_TIMEOUT_MS = 10_000;

/** Longest stretch of paced sends (requests, broadcasts) before the event loop reads its sockets again. */
const SEND_SLICE_MS = 4;

/**
 * What a stranger may hold before proving a key: a few connections, a few kilobytes each. Tensor frames are
 * large, but only an authenticated node is ever asked for one, so until then a hello and an auth must fit.
 */
export interface ConnectionLimits {
  /** Unauthenticated connections at once, from everyone. */
  maxUnauthenticated: number;
  /** Unauthenticated connections at once from one address. */
  maxUnauthenticatedPerAddress: number;
  /** Bytes a connection may send before it authenticates. */
  preAuthBytes: number;
}

export const defaultConnectionLimits: ConnectionLimits = {
  maxUnauthenticated: 256,
  maxUnauthenticatedPerAddress: 64,
  preAuthBytes: 64 * 1024,
};

export interface SessionsOptions {
  config: RunConfig;
  run: RunShape;
  publicKey: string;
  /** Signs with the coordinator's key (its proof to nodes that it holds the key they pin). */
  sign(data: Uint8Array): Uint8Array;
  verify: VerifySignature;
  store: CoordinatorStore;
  metrics: CoordinatorMetrics;
  log: Logger;
  limits: WireLimits;
  authTimeoutMs?: number;
  connectionLimits: ConnectionLimits;
  /** The attempt now running: its tasks are watched for silence, older attempts' gradients are still accepted. */
  attemptNo(): number;
  /** A task result, validated against what the task asked for. */
  onResult(
    peer: Peer,
    message: Extract<NodeMessage, { type: 'result' }>,
    received: Received<NodeMessage>,
  ): void;
  /** Something placement cares about changed: a node asked for work. */
  onJoin(): void;
  /** A node says the tensor a peer sent it was bad. */
  onBadInput(peer: Peer, message: Extract<NodeMessage, { type: 'badInput' }>): void;
  /** Where the coordinator's circuit relay listens (peer-to-peer runs that serve one), for welcomes. */
  relayAddrs(): string[];
  /** A node says it could not send a peer the tensor it was told to. */
  onSendFailed(peer: Peer, message: Extract<NodeMessage, { type: 'sendFailed' }>): void;
  /** A peer proved its key and got its welcome and receipts; the run's progress follows. */
  onWelcomed(peer: Peer): void;
  /**
   * A peer is gone (closed, refused or dropped); its work may have to be redone. `dropped`: for something
   * it did (a fault, a lie, silence), so nothing it produced may be trusted.
   */
  onLost(peer: Peer, reason: string, dropped: boolean): void;
}

/**
 * The control plane's connections: one session per node WebSocket, the challenge-response authentication,
 * bans, liveness (the watchdog), and request/reply with a node. Every byte a node sends goes through a
 * WireReader that knows what tensors the coordinator asked that node for.
 */
export class Sessions {
  readonly peers = new Set<Peer>();
  private readonly bans = new Map<string, number>();
  private connections = 0;
  /** TCP sockets of the connections open now, and the bytes of those already closed (both directions). */
  private readonly sockets = new Set<Socket>();
  private closedBytes = 0;
  /** Requests and broadcasts go to many peers at once; a heartbeat's pong goes out between their slices. */
  private readonly pacer = new SendPacer(SEND_SLICE_MS);

  constructor(private readonly options: SessionsOptions) {}

  /** Every byte this coordinator's node connections carried, both ways, on the wire (WebSocket framing included). */
  get wireBytes(): number {
    let open = 0;
    for (const raw of this.sockets) open += raw.bytesRead + raw.bytesWritten;
    return this.closedBytes + open;
  }

  /** Whether the node with this key (hex) is connected and has proved it. */
  isAuthenticated(nodeId: string): boolean {
    for (const p of this.peers) if (p.authenticated && p.nodeId === nodeId) return true;
    return false;
  }

  get authenticatedCount(): number {
    return [...this.peers].filter((p) => p.authenticated).length;
  }

  /** The replicas of `stage`, in node-id order. */
  membersOf(stage: number): Peer[] {
    return [...this.peers].filter((p) => p.stage === stage).sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  }

  /** Sends every authenticated peer the same bytes, encoded once. */
  broadcast(message: Outgoing<CoordinatorMessage>): void {
    const encoded = encodeShared(message);
    for (const peer of this.peers) if (peer.authenticated) this.pacer.send(() => peer.sendEncoded(encoded));
  }

  readonly request: Request = (peer, kind, key, spec, send) => {
    if (peer.channel.isClosed || !this.peers.has(peer))
      return Promise.reject(new PeerLost(`node ${peer.shortId} is gone`));
    return new Promise((resolve, reject) => {
      peer.awaiting = { kind, key, spec, since: Date.now(), resolve, reject };
      this.pacer.send(() => {
        try {
          send();
        } catch (err) {
          reject(err as Error);
        }
      });
    });
  };

  /**
   * Asks `peer` for the tensor it sent peer to peer for `microBatch` of the current step's `attempt`: null
   * when it no longer holds it; rejects when the peer leaves first.
   */
  fetch(
    peer: Peer,
    step: number,
    attempt: number,
    microBatch: number,
    direction: Direction,
    spec: TensorSpec,
  ): Promise<Tensor | null> {
    if (peer.channel.isClosed || !this.peers.has(peer))
      return Promise.reject(new PeerLost(`node ${peer.shortId} is gone`));
    return new Promise((resolve, reject) => {
      peer.fetches.set(`${attempt}/${microBatch}/${direction}`, { spec, since: Date.now(), resolve, reject });
      peer.send({ type: 'fetch', step, attempt, microBatch, direction });
    });
  }

  /** Takes a new WebSocket, unless the caps on unauthenticated connections say no. */
  accept(socket: WebSocket, address: string, raw: Socket): void {
    const limits = this.options.connectionLimits;
    let unauthenticated = 0;
    let fromAddress = 0;
    for (const p of this.peers) {
      if (p.authenticated) continue;
      unauthenticated++;
      if (p.address === address) fromAddress++;
    }
    if (unauthenticated >= limits.maxUnauthenticated || fromAddress >= limits.maxUnauthenticatedPerAddress) {
      this.options.metrics.rejected.inc({ code: 'too-many-connections' });
      socket.terminate();
      return;
    }
    const reader: WireReader<NodeMessage> = new WireReader<NodeMessage>(
      nodeMessageSchema,
      (m): TensorSpec[] => this.expect(peer, m),
      this.options.limits,
    );
    const channel: Channel<NodeMessage, CoordinatorMessage> = new Channel<NodeMessage, CoordinatorMessage>(
      socket,
      reader,
      (received): void => this.onMessage(peer, received),
      (error): void => {
        const code = error instanceof ProtocolError ? error.code : 'error';
        this.options.metrics.rejected.inc({ code });
        this.options.log.warn({ node: peer.shortId, code, error: error.message }, 'refused a message');
        // An authenticated node that sends malformed work is not trusted again for a while.
        if (peer.authenticated) this.bans.set(peer.nodeId, Date.now() + this.options.config.banMs);
        // Nor is what it produced earlier in the attempt: replayed without it, not rerouted.
        this.lose(peer, `protocol violation: ${error.message}`, true);
      },
    );
    const peer: Peer = new Peer(++this.connections, channel, socket, raw);
    peer.address = address;
    this.peers.add(peer);
    // Counted on the TCP socket, before ws assembles a frame: a stranger's 60 MiB frame is cut off at the
    // limit instead of being buffered whole.
    let preAuthBytes = 0;
    const countPreAuth = (chunk: Buffer): void => {
      if (peer.authenticated) return void raw.off('data', countPreAuth);
      preAuthBytes += chunk.length;
      if (preAuthBytes <= limits.preAuthBytes) return;
      raw.off('data', countPreAuth);
      this.options.metrics.rejected.inc({ code: 'too-large' });
      raw.destroy();
    };
    raw.on('data', countPreAuth);
    this.sockets.add(raw);
    raw.once('close', () => {
      this.sockets.delete(raw);
      this.closedBytes += raw.bytesRead + raw.bytesWritten;
    });
    socket.on('message', (data: Buffer, isBinary: boolean) =>
      channel.receive(
        isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'),
      ),
    );
    socket.on('close', () => {
      channel.markClosed();
      this.lose(peer, 'connection closed');
    });
    socket.on('error', (err) =>
      this.options.log.debug({ node: peer.shortId, err: err.message }, 'socket error'),
    );
  }

  /** The tensors a message from `peer` must carry, decided from what we asked it for. */
  private expect(peer: Peer, m: NodeMessage): TensorSpec[] {
    switch (m.type) {
      case 'result': {
        const task = peer.tasks.get(m.taskId);
        if (!task) throw new ProtocolError('unexpected', `no task ${m.taskId} is outstanding`);
        // A last stage that leaves out its loss fails the attempt; unrefused, it could do so every attempt
        // and hold the run at one step for good (found by test/adversarial/message-fuzz.test.ts).
        const computesLoss = task.kind === 'forwardBackward' || task.kind === 'evaluate';
        if (computesLoss !== (m.loss !== undefined))
          throw new ProtocolError(
            'bad-message',
            `a ${task.kind} result ${computesLoss ? 'must carry its loss' : 'carries no loss'}`,
          );
        if (!m.overflow) return task.result;
        if (this.options.config.precision !== 'mixed' || task.kind === 'forward' || task.kind === 'evaluate')
          throw new ProtocolError('bad-message', `a ${task.kind} task cannot overflow in this run`);
        return [];
      }
      case 'grads': {
        const { run } = this.options;
        if (peer.awaiting?.kind === 'grads' && peer.awaiting.key === m.attempt) return peer.awaiting.spec;
        if (peer.stage !== null && m.attempt < this.options.attemptNo())
          return [{ dtype: 'f32', shape: [stageParamCount(run.model, run.ranges[peer.stage]!)] }];
        throw new ProtocolError('unexpected', 'gradients were not requested');
      }
      case 'fetched': {
        const fetch = peer.fetches.get(`${m.attempt}/${m.microBatch}/${m.direction}`);
        if (!fetch) throw new ProtocolError('unexpected', 'no such tensor was asked for');
        return m.held ? [fetch.spec] : [];
      }
      case 'applied':
      case 'state':
      case 'loaded': {
        const a = peer.awaiting;
        const key = m.type === 'state' ? m.requestId : m.step;
        if (a?.kind !== m.type || a.key !== key)
          throw new ProtocolError('unexpected', `no ${m.type} reply is due`);
        return a.kind === 'loaded' ? [] : a.spec;
      }
      default:
        return [];
    }
  }

  private onMessage(peer: Peer, received: Received<NodeMessage>): void {
    const { message } = received;
    if (!peer.authenticated && message.type !== 'hello' && message.type !== 'auth') {
      peer.channel.fail(new ProtocolError('unauthenticated', `${message.type} before authentication`));
      return;
    }
    switch (message.type) {
      case 'hello':
        return this.onHello(peer, message);
      case 'auth':
        return this.onAuth(peer, message.signature);
      case 'join':
        if (this.options.config.dataPlane === 'p2p' && !message.p2p)
          return this.drop(peer, 'asked for work in a peer-to-peer run without a libp2p address');
        peer.wantsWork = true;
        peer.p2p = message.p2p ?? null;
        this.options.log.info({ node: peer.shortId, engine: peer.engine }, 'node asks for work');
        return this.options.onJoin();
      case 'result':
        return this.options.onResult(peer, message, received);
      case 'badInput':
        return this.options.onBadInput(peer, message);
      case 'sendFailed':
        return this.options.onSendFailed(peer, message);
      case 'fetched': {
        const key = `${message.attempt}/${message.microBatch}/${message.direction}`;
        const fetch = peer.fetches.get(key)!;
        peer.fetches.delete(key);
        return fetch.resolve(received.tensors[0] ?? null);
      }
      case 'grads':
      case 'applied':
      case 'state':
      case 'loaded': {
        const a = peer.awaiting;
        if (a && a.kind === message.type) {
          peer.awaiting = null;
          a.resolve(received);
        }
        return;
      }
      case 'ping':
        return peer.send({ type: 'pong', sentAt: message.sentAt });
      case 'payout':
        this.options.store.setPayoutAddress(peer.nodeId, message.address);
        this.options.log.info({ node: peer.shortId, address: message.address }, 'payout address registered');
        return;
      case 'error':
        this.options.log.warn(
          { node: peer.shortId, code: message.code, error: message.message },
          'node reported an error',
        );
        return this.drop(peer, `node error: ${message.message}`);
    }
  }

  private onHello(peer: Peer, hello: Extract<NodeMessage, { type: 'hello' }>): void {
    if (peer.nodeId) return peer.channel.fail(new ProtocolError('unexpected', 'hello sent twice'));
    const bannedUntil = this.bans.get(hello.nodeId) ?? 0;
    if (bannedUntil > Date.now()) {
      return peer.channel.fail(
        new ProtocolError(
          'unauthenticated',
          `node is banned for ${Math.ceil((bannedUntil - Date.now()) / 1000)} s more`,
        ),
      );
    }
    peer.nodeId = hello.nodeId;
    peer.engine = hello.engine;
    peer.receiptCursor = hello.receiptCursor;
    peer.statementCursor = hello.statementCursor ?? 0;
    peer.nonce = randomBytes(32).toString('base64');
    const { publicKey } = this.options;
    const proof =
      hello.nonce &&
      this.options.sign(coordinatorProofBytes(hello.nonce, peer.nonce, publicKey, hello.nodeId));
    peer.send({
      type: 'challenge',
      nonce: peer.nonce,
      coordinatorKey: publicKey,
      runId: this.options.config.runId,
      ...(proof ? { signature: Buffer.from(proof).toString('base64') } : {}),
    });
  }

  private onAuth(peer: Peer, signature: string): void {
    const { config, run, store, publicKey } = this.options;
    if (!peer.nonce || peer.authenticated)
      return peer.channel.fail(new ProtocolError('unexpected', 'auth without a challenge'));
    const ok = this.options.verify(
      peer.nodeId,
      authChallengeBytes(peer.nonce, publicKey, peer.nodeId),
      Buffer.from(signature, 'base64'),
    );
    if (!ok)
      return peer.channel.fail(new ProtocolError('unauthenticated', 'signature does not match the node key'));
    for (const other of this.peers) {
      if (other !== peer && other.nodeId === peer.nodeId) {
        other.channel.close(4000, 'replaced by a newer connection');
        this.lose(other, 'replaced by a newer connection');
      }
    }
    peer.authenticated = true;
    store.touchNode(peer.nodeId, peer.engine);
    this.options.metrics.nodes.set(this.authenticatedCount);
    const { model, shape } = run;
    const relay = this.options.relayAddrs();
    peer.send({
      type: 'welcome',
      runId: config.runId,
      model,
      shape,
      stages: config.stages,
      seed: config.seed,
      compression: run.compression,
      dataPlane: config.dataPlane,
      precision: config.precision,
      inputTimeoutMs: Math.min(Math.ceil(config.taskTimeoutMs / 2), DAY_MS),
      ...(relay.length > 0 ? { p2pRelay: relay } : {}),
    });
    for (const { seq, signed } of store.receiptsSince(peer.nodeId, peer.receiptCursor))
      peer.send({ type: 'receipt', seq, signed });
    for (const signed of store.statementsSince(peer.nodeId, peer.statementCursor))
      peer.send({ type: 'credits', signed });
    this.options.onWelcomed(peer);
  }

  /** Removes a peer; work it held is redone. */
  lose(peer: Peer, reason: string, dropped = false): void {
    if (!this.peers.delete(peer)) return;
    this.options.metrics.nodes.set(this.authenticatedCount);
    // Stages count from 1 in what people read.
    const stage = peer.stage === null ? null : peer.stage + 1;
    if (peer.authenticated) this.options.log.info({ node: peer.shortId, stage, reason }, 'node left');
    const awaiting = peer.awaiting;
    peer.awaiting = null;
    awaiting?.reject(new PeerLost(`node ${peer.shortId} left: ${reason}`));
    for (const fetch of peer.fetches.values())
      fetch.reject(new PeerLost(`node ${peer.shortId} left: ${reason}`));
    peer.fetches.clear();
    this.options.onLost(peer, reason, dropped);
  }

  /** Drops a peer that went silent or failed, and bans it for a while. */
  drop(peer: Peer, reason: string): void {
    this.options.metrics.dropped.inc();
    if (peer.nodeId) this.bans.set(peer.nodeId, Date.now() + this.options.config.banMs);
    this.options.log.warn({ node: peer.shortId, reason }, 'dropping node');
    peer.channel.close(4001, reason.slice(0, 120));
    this.lose(peer, reason, true);
  }

  /** The watchdog: unauthenticated connections past their time, and nodes silent on a task or a request. */
  checkSilentPeers(): void {
    const { config } = this.options;
    const now = Date.now();
    const attemptNo = this.options.attemptNo();
    for (const peer of this.peers) {
      if (!peer.authenticated) {
        const limit = this.options.authTimeoutMs ?? AUTH_TIMEOUT_MS;
        if (now - peer.connectedAt > limit)
          peer.channel.fail(new ProtocolError('unauthenticated', `no authentication within ${limit} ms`));
        continue;
      }
      // Loading a stage and its first task start an engine and compile kernels: far slower than a task.
      const warmingUp = peer.emaMs === null || peer.awaiting?.kind === 'loaded';
      const limit = Math.max(
        config.taskTimeoutMs,
        10 * (peer.emaMs ?? 0),
        warmingUp ? config.warmupTimeoutMs : 0,
      );
      const late = [...peer.tasks.values()].some((t) => t.attempt === attemptNo && now - t.sentAt > limit);
      if (late) this.drop(peer, `no result within ${limit} ms`);
      else if ([...peer.fetches.values()].some((f) => now - f.since > limit))
        this.drop(peer, `no fetched tensor within ${limit} ms`);
      else if (peer.awaiting && now - peer.awaiting.since > limit)
        this.drop(peer, `no ${peer.awaiting.kind} reply within ${limit} ms`);
    }
  }

  closeAll(): void {
    for (const peer of this.peers) peer.channel.close(1001, 'coordinator shutting down');
  }
}
