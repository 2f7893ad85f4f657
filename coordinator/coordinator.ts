import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { seedState, type FlatState } from '../gpu/model/flat-state.js';
import { stageTrainFlops } from '../gpu/model/flops.js';
import { stageParamCount } from '../gpu/model/params.js';
import { authChallengeBytes } from '../shared/protocol/auth.js';
import { Channel } from '../shared/protocol/channel.js';
import type { Tensor } from '../shared/protocol/frame.js';
import { nodeMessageSchema, type CoordinatorMessage, type NodeMessage } from '../shared/protocol/messages.js';
import type { SignedReceipt } from '../shared/protocol/receipt.js';
import { stateFromTensors, stateSpec, stateTensors } from '../shared/protocol/stage-state.js';
import {
  ProtocolError,
  WireReader,
  defaultWireLimits,
  type Received,
  type TensorSpec,
  type WireLimits,
} from '../shared/protocol/wire.js';
import { checkpointDir, loadCheckpoint, saveCheckpoint } from './checkpoints.js';
import type { Corpus, MicroBatch } from './data.js';
import { CoordinatorMetrics } from './metrics.js';
import { Peer, type Awaiting } from './peer.js';
import { rebalanceMove, stageForJoiner, type PlacedPeer } from './placement.js';
import { receiptId, signReceipt, type CoordinatorKeys, type VerifySignature } from './receipts.js';
import { runShape, type RunConfig, type RunShape } from './run-config.js';
import { AttemptFailed, StepAttempt, type AttemptResult } from './step-attempt.js';
import { CoordinatorStore } from './store.js';

export interface CoordinatorOptions {
  config: RunConfig;
  corpus: Corpus;
  /** Holds coordinator.db and checkpoints/. */
  dataDir: string;
  /** Defaults to <dataDir>/coordinator.db. */
  dbPath?: string;
  keys: CoordinatorKeys;
  verify: VerifySignature;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** PEM certificate and key: serve wss:// and https://. */
  tls?: { cert: string; key: string };
  logger?: Logger;
  limits?: Partial<WireLimits>;
  /** How often the watchdog looks for silent peers. */
  watchdogMs?: number;
  /** Connections must authenticate within this many ms (default 10 s). */
  authTimeoutMs?: number;
}

export interface StepEvent {
  step: number;
  loss: number;
  tokens: number;
  tokensPerSecond: number;
  stageNodes: number[];
  attempts: number;
}

export interface CoordinatorStatus {
  runId: string;
  state: 'waiting' | 'training' | 'done';
  reason: string;
  step: number;
  steps: number;
  /** Progress within the current step: micro-batches through backward, of those it needs. */
  microBatches: { done: number; total: number };
  loss: number | null;
  tokens: number;
  tokensPerSecond: number;
  nodes: number;
  stages: Array<{ index: number; firstBlock: number; endBlock: number; nodes: string[] }>;
  relayedBytes: number;
  receipts: number;
}

class PeerLost extends Error {}

/** Until a peer has been measured, a task is assumed to take this long (only ratios matter for routing). */
const FALLBACK_TASK_MS = 1000;
/** A connection that has not proven its key by then is closed, so idle sockets cannot pile up. */
const AUTH_TIMEOUT_MS = 10_000;

/**
 * The network coordinator of one training run: WebSocket server, authentication, stage placement, SWARM
 * routing, gradient averaging, crediting, persistence, metrics. See coordinator/README.md.
 */
export class Coordinator extends EventEmitter {
  readonly run: RunShape;
  readonly metrics = new CoordinatorMetrics();
  readonly store: CoordinatorStore;
  readonly finished: Promise<void>;
  private readonly config: RunConfig;
  private readonly log: Logger;
  private readonly limits: WireLimits;
  private readonly peers = new Set<Peer>();
  private readonly bans = new Map<string, number>();
  private readonly checkpointRoot: string;
  private readonly stateCache = new Map<number, FlatState>();
  /** One micro-batch's forward + backward FLOPs on each stage. */
  private readonly stageFlops: number[];
  private server!: Server;
  private wss!: WebSocketServer;
  private watchdog!: NodeJS.Timeout;
  private connections = 0;
  private taskIds = 0;
  private requestIds = 0;
  private step = 0;
  private attemptNo = 0;
  private attempt: StepAttempt | null = null;
  private stepAttempts = 0;
  private lastLoss: number | null = null;
  private tokens = 0;
  private tokensThisProcess = 0;
  private trainingMs = 0;
  private stepStarted = 0;
  private relayed = 0;
  private state: CoordinatorStatus['state'] = 'waiting';
  private reason = 'starting';
  private stopping = false;
  private wakers: Array<() => void> = [];
  private resolveFinished!: () => void;

  private constructor(private readonly options: CoordinatorOptions) {
    super();
    this.config = options.config;
    this.run = runShape(options.config);
    this.stageFlops = this.run.ranges.map((r) => stageTrainFlops(this.run.model, r, this.run.shape));
    this.log = options.logger ?? pino({ name: 'coordinator' });
    this.limits = { ...defaultWireLimits, ...options.limits };
    mkdirSync(options.dataDir, { recursive: true });
    this.checkpointRoot = join(options.dataDir, 'checkpoints');
    this.store = new CoordinatorStore(options.dbPath ?? join(options.dataDir, 'coordinator.db'));
    this.store.claimRun(options.config.runId);
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
  }

  static async start(options: CoordinatorOptions): Promise<Coordinator> {
    const c = new Coordinator(options);
    c.resume();
    await c.listen();
    void c.loop();
    return c;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    const host = this.options.host ?? '127.0.0.1';
    return `${this.options.tls ? 'wss' : 'ws'}://${host}:${this.port}`;
  }

  get publicKey(): string {
    return this.options.keys.publicKeyHex;
  }

  status(): CoordinatorStatus {
    return {
      runId: this.config.runId,
      state: this.state,
      reason: this.reason,
      step: this.step,
      steps: this.config.steps,
      microBatches: {
        done: this.attempt && !this.attempt.isSettled ? this.attempt.completedMicroBatches : 0,
        total: this.config.microBatchesPerStep,
      },
      loss: this.lastLoss,
      tokens: this.tokens,
      tokensPerSecond: this.tokensPerSecond(),
      nodes: [...this.peers].filter((p) => p.authenticated).length,
      stages: this.run.ranges.map((r) => ({
        index: r.index,
        firstBlock: r.firstBlock,
        endBlock: r.endBlock,
        nodes: this.membersOf(r.index).map((p) => p.nodeId),
      })),
      relayedBytes: this.relayed,
      receipts: this.store.receiptCount(),
    };
  }

  async close(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.wake();
    this.attempt?.fail('coordinator is shutting down');
    clearInterval(this.watchdog);
    for (const peer of this.peers) peer.channel.close(1001, 'coordinator shutting down');
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.store.close();
    this.resolveFinished();
  }

  // --- startup -------------------------------------------------------------------------------------------

  /** Continues from the database: progress back to the last checkpoint, every receipt kept. */
  private resume(): void {
    const progress = this.store.progress();
    const checkpoint = this.store.latestCheckpoint();
    const resumeStep = Math.min(progress.step, checkpoint?.step ?? 0);
    if (resumeStep < progress.step) {
      this.log.warn(
        { committed: progress.step, checkpoint: resumeStep },
        'resuming from the last checkpoint; later steps are redone (their receipts stay valid)',
      );
      this.store.truncateSteps(resumeStep);
    }
    const after = this.store.progress();
    this.step = after.step;
    this.tokens = after.tokens;
    this.lastLoss = after.loss;
    this.metrics.step.set(this.step);
  }

  private async listen(): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.serveHttp(req, res);
    this.server = this.options.tls ? createHttpsServer(this.options.tls, handler) : createHttpServer(handler);
    this.wss = new WebSocketServer({ server: this.server, maxPayload: this.limits.maxBytes });
    this.wss.on('connection', (socket) => this.onConnection(socket));
    this.wss.on('error', (err) => this.log.error({ err }, 'websocket server error'));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
    });
    this.watchdog = setInterval(() => this.checkSilentPeers(), this.options.watchdogMs ?? 500);
    this.log.info({ url: this.url, runId: this.config.runId, step: this.step }, 'coordinator listening');
  }

  private async serveHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      this.metrics.tokensPerSecond.set(this.tokensPerSecond());
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(await this.metrics.registry.metrics());
    } else if (path === '/status' || path === '/api/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.status()));
    } else if (path === '/api/balances') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.store.balances()));
    } else if (path === '/api/losses') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.store.losses()));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found: try /status, /metrics, /api/balances, /api/losses\n');
    }
  }

  // --- connections ---------------------------------------------------------------------------------------

  private onConnection(socket: WebSocket): void {
    const reader: WireReader<NodeMessage> = new WireReader<NodeMessage>(
      nodeMessageSchema,
      (m): TensorSpec[] => this.expect(peer, m),
      this.limits,
    );
    const channel: Channel<NodeMessage, CoordinatorMessage> = new Channel<NodeMessage, CoordinatorMessage>(
      socket,
      reader,
      (received): void => this.onMessage(peer, received),
      (error): void => {
        const code = error instanceof ProtocolError ? error.code : 'error';
        this.metrics.rejected.inc({ code });
        this.log.warn({ node: peer.shortId, code, error: error.message }, 'refused a message');
        // An authenticated node that sends malformed work is not trusted again for a while.
        if (peer.authenticated) this.bans.set(peer.nodeId, Date.now() + this.config.banMs);
        this.lose(peer, `protocol violation: ${error.message}`);
      },
    );
    const peer: Peer = new Peer(++this.connections, channel);
    this.peers.add(peer);
    socket.on('message', (data: Buffer, isBinary: boolean) =>
      channel.receive(
        isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'),
      ),
    );
    socket.on('close', () => {
      channel.markClosed();
      this.lose(peer, 'connection closed');
    });
    socket.on('error', (err) => this.log.debug({ node: peer.shortId, err: err.message }, 'socket error'));
  }

  /** The tensors a message from `peer` must carry, decided from what we asked it for. */
  private expect(peer: Peer, m: NodeMessage): TensorSpec[] {
    switch (m.type) {
      case 'result': {
        const task = peer.tasks.get(m.taskId);
        if (!task) throw new ProtocolError('unexpected', `no task ${m.taskId} is outstanding`);
        return task.result;
      }
      case 'grads':
        if (peer.awaiting?.kind === 'grads' && peer.awaiting.key === m.attempt) return peer.awaiting.spec;
        if (peer.stage !== null && m.attempt < this.attemptNo)
          return [{ dtype: 'f32', shape: [stageParamCount(this.run.model, this.run.ranges[peer.stage]!)] }];
        throw new ProtocolError('unexpected', 'gradients were not requested');
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

  private onMessage(peer: Peer, { message, tensors }: Received<NodeMessage>): void {
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
        peer.wantsWork = true;
        this.log.info({ node: peer.shortId, engine: peer.engine }, 'node asks for work');
        return this.wake();
      case 'result':
        return this.onResult(peer, message.taskId, message.loss, message.busyMs, tensors);
      case 'grads':
      case 'applied':
      case 'state':
      case 'loaded': {
        const a = peer.awaiting;
        if (a && a.kind === message.type) {
          peer.awaiting = null;
          a.resolve({ message, tensors });
        }
        return;
      }
      case 'ping':
        return peer.send({ type: 'pong', sentAt: message.sentAt });
      case 'error':
        this.log.warn(
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
    peer.nonce = randomBytes(32).toString('base64');
    peer.send({
      type: 'challenge',
      nonce: peer.nonce,
      coordinatorKey: this.publicKey,
      runId: this.config.runId,
    });
  }

  private onAuth(peer: Peer, signature: string): void {
    if (!peer.nonce || peer.authenticated)
      return peer.channel.fail(new ProtocolError('unexpected', 'auth without a challenge'));
    const ok = this.options.verify(
      peer.nodeId,
      authChallengeBytes(peer.nonce, this.publicKey, peer.nodeId),
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
    this.store.touchNode(peer.nodeId, peer.engine);
    this.metrics.nodes.set([...this.peers].filter((p) => p.authenticated).length);
    const { model, shape } = this.run;
    peer.send({
      type: 'welcome',
      runId: this.config.runId,
      model,
      shape,
      stages: this.config.stages,
      seed: this.config.seed,
    });
    for (const { seq, signed } of this.store.receiptsSince(peer.nodeId, peer.receiptCursor))
      peer.send({ type: 'receipt', seq, signed });
  }

  private onResult(
    peer: Peer,
    taskId: number,
    loss: number | undefined,
    busyMs: number,
    tensors: Tensor[],
  ): void {
    const task = peer.tasks.get(taskId)!;
    peer.tasks.delete(taskId);
    const attempt = this.attempt;
    if (!attempt || task.attempt !== this.attemptNo || task.step !== this.step) return;
    peer.observeTaskTime(Math.max(busyMs, 0.01));
    attempt.onResult(peer, task, loss, tensors);
  }

  /** Removes a peer; work it held is replayed. */
  private lose(peer: Peer, reason: string): void {
    if (!this.peers.delete(peer)) return;
    this.metrics.nodes.set([...this.peers].filter((p) => p.authenticated).length);
    if (peer.authenticated) this.log.info({ node: peer.shortId, stage: peer.stage, reason }, 'node left');
    const awaiting = peer.awaiting;
    peer.awaiting = null;
    awaiting?.reject(new PeerLost(`node ${peer.shortId} left: ${reason}`));
    if (this.attempt && !this.attempt.isSettled && this.attempt.involves(peer)) {
      this.attempt.fail(`node ${peer.shortId} on stage ${peer.stage} left (${reason})`);
    }
    this.wake();
  }

  /** Drops a peer that went silent or failed, and bans it for a while. */
  private drop(peer: Peer, reason: string): void {
    this.metrics.dropped.inc();
    if (peer.nodeId) this.bans.set(peer.nodeId, Date.now() + this.config.banMs);
    this.log.warn({ node: peer.shortId, reason }, 'dropping node');
    peer.channel.close(4001, reason.slice(0, 120));
    this.lose(peer, reason);
  }

  private checkSilentPeers(): void {
    const now = Date.now();
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
        this.config.taskTimeoutMs,
        10 * (peer.emaMs ?? 0),
        warmingUp ? this.config.warmupTimeoutMs : 0,
      );
      const late = [...peer.tasks.values()].some(
        (t) => t.attempt === this.attemptNo && now - t.sentAt > limit,
      );
      if (late) this.drop(peer, `no result within ${limit} ms`);
      else if (peer.awaiting && now - peer.awaiting.since > limit)
        this.drop(peer, `no ${peer.awaiting.kind} reply within ${limit} ms`);
    }
  }

  // --- the training loop ---------------------------------------------------------------------------------

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const w of wakers) w();
  }

  private changed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.wakers.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private setState(state: CoordinatorStatus['state'], reason: string): void {
    if (this.state === state && this.reason === reason) return;
    this.log.info({ state, reason }, 'run state');
    // Nodes show why they are idle; per-step progress is not worth a broadcast.
    if (this.state !== state || state !== 'training') {
      for (const peer of this.peers) if (peer.authenticated) peer.send({ type: 'runState', state, reason });
    }
    this.state = state;
    this.reason = reason;
  }

  private membersOf(stage: number): Peer[] {
    return [...this.peers].filter((p) => p.stage === stage).sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  }

  private tokensPerSecond(): number {
    return this.trainingMs > 0 ? (this.tokensThisProcess * 1000) / this.trainingMs : 0;
  }

  private async loop(): Promise<void> {
    while (!this.stopping && this.step < this.config.steps) {
      try {
        await this.prepareStep();
        this.stepStarted = Date.now();
        const result = await this.runAttempt();
        await this.commit(result);
      } catch (err) {
        if (this.stopping) break;
        const reason =
          err instanceof AttemptFailed || err instanceof PeerLost
            ? err.message
            : `internal error: ${(err as Error).stack}`;
        this.abortAttempt(reason);
        if (!(err instanceof AttemptFailed || err instanceof PeerLost)) await this.changed(1000);
      }
    }
    if (!this.stopping) {
      this.setState('done', `trained ${this.step} steps`);
      this.resolveFinished();
    }
  }

  private abortAttempt(reason: string): void {
    this.metrics.replays.inc({ reason: reason.startsWith('internal') ? 'internal' : 'peer' });
    this.log.warn(
      { step: this.step, attempt: this.attemptNo, reason },
      'step attempt abandoned; replaying it',
    );
    this.attempt?.fail(reason);
    this.attempt = null;
    for (const peer of this.peers) {
      if (peer.stage === null) continue;
      peer.resident = null;
      peer.queue.length = 0;
      peer.send({ type: 'abort', step: this.step, attempt: this.attemptNo });
    }
  }

  /** Places joiners and waits until every stage has a replica holding the current weights. */
  private async prepareStep(): Promise<void> {
    for (;;) {
      if (this.stopping) throw new AttemptFailed('stopping');
      this.rollBackIfWeightsLost();
      await this.admitJoiners();
      await this.rebalance();
      const empty = this.run.ranges.filter((r) => this.membersOf(r.index).length === 0).map((r) => r.index);
      if (empty.length === 0) {
        this.setState('training', `training step ${this.step + 1} of ${this.config.steps}`);
        return;
      }
      this.setState('waiting', `waiting for a node to train stage ${empty.join(', ')}`);
      await this.changed(1000);
    }
  }

  /** Whether the weights of `stage` at the current step exist somewhere: a replica, a checkpoint, or the seed. */
  private weightsAvailable(stage: number): boolean {
    return (
      this.membersOf(stage).length > 0 || this.step === 0 || this.store.latestCheckpoint()?.step === this.step
    );
  }

  /**
   * When every replica of a stage is gone between checkpoints, the current weights are lost: go back to the
   * latest checkpoint for all stages. Receipts already issued stay valid; redone units are not re-credited.
   */
  private rollBackIfWeightsLost(): void {
    const lost = this.run.ranges.filter((r) => !this.weightsAvailable(r.index));
    if (lost.length === 0) return;
    const target = this.store.latestCheckpoint()?.step ?? 0;
    this.log.warn(
      { from: this.step, to: target, stages: lost.map((r) => r.index) },
      'every replica of a stage left; rolling back to the last checkpoint',
    );
    this.store.truncateSteps(target);
    const progress = this.store.progress();
    this.step = progress.step;
    this.tokens = progress.tokens;
    this.lastLoss = progress.loss;
    this.stateCache.clear();
    for (const peer of this.peers) peer.stage = null;
  }

  /** Placement's view of the replicas: FLOPs per second each sustains on its stage. */
  private placed(): PlacedPeer[] {
    return [...this.peers]
      .filter((p) => p.stage !== null)
      .map((p) => ({
        id: p.nodeId,
        stage: p.stage!,
        flopsPerSecond: p.unitEmaMs === null ? null : (this.stageFlops[p.stage!]! * 1000) / p.unitEmaMs,
      }));
  }

  private async admitJoiners(): Promise<void> {
    const joiners = [...this.peers]
      .filter((p) => p.authenticated && p.wantsWork && p.stage === null)
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
    for (const peer of joiners) {
      if (!this.peers.has(peer)) continue;
      await this.assign(peer, stageForJoiner(this.placed(), this.stageFlops)).catch((err: Error) =>
        this.log.warn({ node: peer.shortId, err: err.message }, 'could not place node'),
      );
    }
  }

  /** Moves replicas while that clearly raises the slowest stage's rate (always, for a stage left empty). */
  private async rebalance(): Promise<void> {
    for (let i = 0; i < this.run.ranges.length; i++) {
      const move = rebalanceMove(this.placed(), this.stageFlops);
      const peer = move && [...this.peers].find((p) => p.nodeId === move.id);
      if (!move || !peer) return;
      this.log.info(
        { node: peer.shortId, from: move.from, to: move.to },
        'moving a node to balance the stages',
      );
      await this.assign(peer, move.to).catch((err: Error) =>
        this.log.warn({ node: peer.shortId, err: err.message }, 'could not move node'),
      );
    }
  }

  private async assign(peer: Peer, stage: number): Promise<void> {
    const state = await this.stageState(stage);
    const range = this.run.ranges[stage]!;
    await this.request(peer, 'loaded', this.step, [], () =>
      peer.send(
        { type: 'assign', range, optimizerStep: state.optimizerStep, step: this.step },
        stateTensors(state),
      ),
    );
    peer.stage = stage;
    peer.resident = null;
    this.log.info(
      { node: peer.shortId, stage, blocks: `${range.firstBlock}-${range.endBlock - 1}`, step: this.step },
      'node placed',
    );
    this.wake();
  }

  /** The current weights and moments of a stage: from a replica, the checkpoint of this step, or the seed. */
  private async stageState(stage: number): Promise<FlatState> {
    const cached = this.stateCache.get(stage);
    if (cached) return cached;
    const paramCount = stageParamCount(this.run.model, this.run.ranges[stage]!);
    const source = this.membersOf(stage)[0];
    let state: FlatState;
    if (source) {
      const requestId = ++this.requestIds;
      const { message, tensors } = await this.request(source, 'state', requestId, stateSpec(paramCount), () =>
        source.send({ type: 'stateRequest', requestId }),
      );
      state = stateFromTensors((message as Extract<NodeMessage, { type: 'state' }>).optimizerStep, tensors);
    } else {
      const checkpoint = this.store.latestCheckpoint();
      if (checkpoint && checkpoint.step === this.step) {
        loadCheckpoint(checkpoint.dir, this.run).forEach((s, i) => this.stateCache.set(i, s));
        return this.stateCache.get(stage)!;
      }
      if (this.step !== 0)
        throw new Error(`no source for the weights of stage ${stage} at step ${this.step}`);
      state = seedState(this.run.model, this.run.ranges[stage]!, this.config.seed);
    }
    this.stateCache.set(stage, state);
    return state;
  }

  private request(
    peer: Peer,
    kind: Awaiting['kind'],
    key: number,
    spec: TensorSpec[],
    send: () => void,
  ): Promise<Received<NodeMessage>> {
    if (peer.channel.isClosed || !this.peers.has(peer))
      return Promise.reject(new PeerLost(`node ${peer.shortId} is gone`));
    return new Promise((resolve, reject) => {
      peer.awaiting = { kind, key, spec, since: Date.now(), resolve, reject };
      send();
    });
  }

  private microBatch(step: number, index: number): MicroBatch {
    return this.options.corpus.microBatch(this.config.seed, step, index, this.run.shape);
  }

  private async runAttempt(): Promise<{
    result: AttemptResult;
    grads: Float32Array[];
    clipScale: number;
    members: Peer[][];
  }> {
    const attemptNo = ++this.attemptNo;
    this.stepAttempts++;
    const step = this.step;
    const members = this.run.ranges.map((r) => this.membersOf(r.index));
    const batches = new Map<number, MicroBatch>();
    const attempt = new StepAttempt(
      {
        run: this.run,
        step,
        attempt: attemptNo,
        members,
        microBatch: (i) => batches.get(i) ?? batches.set(i, this.microBatch(step, i)).get(i)!,
        nextTaskId: () => ++this.taskIds,
        fallbackMs: FALLBACK_TASK_MS,
        onRelay: (bytes) => {
          this.relayed += bytes;
          this.metrics.relayedBytes.inc(bytes);
        },
      },
      this.config.microBatchesPerStep,
    );
    this.attempt = attempt;
    attempt.start();
    const result = await attempt.done;

    // Sum each stage's replica gradients in node-id order, so every replica imports the same bits.
    const grads = await Promise.all(
      members.map(async (stagePeers, stage) => {
        const n = stageParamCount(this.run.model, this.run.ranges[stage]!);
        const contributors = stagePeers.filter((p) => result.units.some((u) => u.peer === p));
        const parts = await Promise.all(
          contributors.map((p) =>
            this.request(p, 'grads', attemptNo, [{ dtype: 'f32', shape: [n] }], () =>
              p.send({ type: 'gradsRequest', step, attempt: attemptNo }),
            ),
          ),
        );
        const sum = new Float32Array(n);
        for (const part of parts) {
          const g = part.tensors[0]!.data as Float32Array;
          for (let i = 0; i < n; i++) sum[i]! += g[i]!;
        }
        return sum;
      }),
    );
    let squared = 0;
    for (const g of grads) for (let i = 0; i < g.length; i++) squared += g[i]! * g[i]!;
    const norm = Math.sqrt(squared);
    if (!Number.isFinite(norm)) throw new AttemptFailed(`gradient norm is ${norm}`);
    const clip = this.config.gradClip;
    const clipScale = clip > 0 && norm > clip ? clip / norm : 1;
    return { result, grads, clipScale, members };
  }

  /** Applies the step on every replica, then records receipts, progress and (when due) a checkpoint. */
  private async commit({
    result,
    grads,
    clipScale,
    members,
  }: Awaited<ReturnType<Coordinator['runAttempt']>>): Promise<void> {
    const step = this.step;
    const checkpointDue = (step + 1) % this.config.checkpointEvery === 0 || step + 1 === this.config.steps;
    const states: Array<FlatState | null> = members.map(() => null);
    await Promise.all(
      members.flatMap((stagePeers, stage) =>
        stagePeers.map(async (peer, i) => {
          const sendState = checkpointDue && i === 0;
          const n = grads[stage]!.length;
          try {
            const { message, tensors } = await this.request(
              peer,
              'applied',
              step,
              sendState ? stateSpec(n) : [],
              () =>
                peer.send({ type: 'apply', step, clipScale, adamw: this.config.adamw, sendState }, [
                  { dtype: 'f32', shape: [n], data: grads[stage]! },
                ]),
            );
            if (sendState)
              states[stage] = stateFromTensors(
                (message as Extract<NodeMessage, { type: 'applied' }>).optimizerStep,
                tensors,
              );
          } catch (err) {
            // A replica lost while applying: the others hold the new weights; prepareStep handles a stage left empty.
            this.log.warn({ node: peer.shortId, err: (err as Error).message }, 'replica lost during apply');
          }
        }),
      ),
    );
    this.attempt = null;
    const loss = result.losses.reduce((a, b) => a + b, 0) / result.losses.length;
    const { batch, seq } = this.run.shape;
    const tokens = batch * seq * this.config.microBatchesPerStep;
    const receipts: SignedReceipt[] = result.units.map((u) =>
      signReceipt(this.options.keys, {
        runId: this.config.runId,
        receiptId: receiptId(this.config.runId, step, u.stage, u.microBatch),
        nodeId: u.peer.nodeId,
        stage: u.stage,
        step,
        microBatch: u.microBatch,
        tokens: batch * seq,
        flops: stageTrainFlops(this.run.model, this.run.ranges[u.stage]!, this.run.shape),
      }),
    );
    const stored = this.store.commitStep(step, loss, tokens, receipts);
    this.metrics.receipts.inc(stored.length);
    for (const { seq: receiptSeq, signed } of stored) {
      const peer = [...this.peers].find((p) => p.nodeId === signed.receipt.nodeId);
      peer?.send({ type: 'receipt', seq: receiptSeq, signed });
    }
    if (states.every((s) => s !== null)) {
      const dir = saveCheckpoint(
        this.checkpointRoot,
        step + 1,
        this.run,
        this.config.runId,
        states as FlatState[],
      );
      this.store.addCheckpoint(step + 1, dir);
    } else if (checkpointDue) {
      this.log.warn(
        { step: step + 1, dir: checkpointDir(this.checkpointRoot, step + 1) },
        'checkpoint skipped: a stage did not return its state',
      );
    }
    this.step = step + 1;
    this.tokens += tokens;
    this.tokensThisProcess += tokens;
    this.trainingMs += Date.now() - this.stepStarted;
    this.lastLoss = loss;
    this.stateCache.clear();
    this.metrics.step.set(this.step);
    this.metrics.loss.set(loss);
    this.run.ranges.forEach((r) =>
      this.metrics.stageNodes.set({ stage: String(r.index) }, this.membersOf(r.index).length),
    );
    const event: StepEvent = {
      step: this.step,
      loss,
      tokens: this.tokens,
      tokensPerSecond: this.tokensPerSecond(),
      stageNodes: this.run.ranges.map((r) => this.membersOf(r.index).length),
      attempts: this.stepAttempts,
    };
    this.stepAttempts = 0;
    this.log.info(event, 'step committed');
    this.emit('step', event);
  }
}
