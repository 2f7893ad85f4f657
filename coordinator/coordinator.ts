import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Libp2p } from 'libp2p';
import { pino, type Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { stageForwardFlopsPerToken, stageTrainFlops } from '../gpu/model/flops.js';
import { stageParamCount } from '../gpu/model/params.js';
import {
  MAX_PROGRESS_LOSSES,
  type NodeMessage,
  type Outgoing,
  type RunProgress,
} from '../shared/protocol/messages.js';
import { startP2pHost } from '../shared/p2p/host.js';
import type { Direction } from '../shared/protocol/codec.js';
import type { SignedCreditStatement } from '../shared/protocol/credit-statement.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type { SignedReceipt } from '../shared/protocol/receipt.js';
import { waitingForStages } from '../shared/stage-label.js';
import { defaultWireLimits, type Received, type WireLimits } from '../shared/protocol/wire.js';
import { applyStep, averageGradients, type AveragedGradients } from './averaging.js';
import { checkpointDir, saveCheckpoint } from './checkpoints.js';
import type { Corpus, MicroBatch } from './data.js';
import { GradientNorms } from './gradient-norms.js';
import { httpApi } from './http-api.js';
import { CoordinatorMetrics } from './metrics.js';
import type { Peer } from './peer.js';
import {
  receiptId,
  signReceipt,
  signStatement,
  type CoordinatorKeys,
  type VerifySignature,
} from './receipts.js';
import { boundarySpec, runShape, type RunConfig, type RunShape } from './run-config.js';
import { defaultConnectionLimits, PeerLost, Sessions, type ConnectionLimits } from './sessions.js';
import { StageAssignment } from './stage-assignment.js';
import { AttemptFailed, StepAttempt, type AttemptResult, type CheckedPart } from './step-attempt.js';
import { CoordinatorStore, type StoredReceipt } from './store.js';
import { SplitCorpus, ValidationHistory, validationDue } from './validation.js';
import { LossScaler } from '../gpu/train/loss-scaler.js';
import {
  boundaryLimit,
  boundaryProblem,
  lossProblem,
  Misbehaviour,
  Overflow,
  sentProblem,
  stateProblem,
} from './value-checks.js';

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
  /** Caps on connections that have not authenticated yet (sessions.ts). */
  connectionLimits?: Partial<ConnectionLimits>;
  /**
   * Peer-to-peer runs: serve circuit relay v2 on these multiaddrs (e.g. `/ip4/0.0.0.0/tcp/4002`) to the
   * run's authenticated nodes, which also listen through it, so a node no neighbour can dial is still
   * reached peer to peer (relayed by libp2p, not through the coordinator's WebSocket).
   */
  p2pRelay?: string[];
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
  /** `stashes[i]`: micro-batches `nodes[i]` can hold between forward and backward (1F1B). */
  stages: Array<{ index: number; firstBlock: number; endBlock: number; nodes: string[]; stashes: number[] }>;
  relayedBytes: number;
  /** Pairs of nodes whose tensors go through the coordinator in a peer-to-peer run (unreachable, disputed). */
  relayedPairs: number;
  /** What the backward differentiates the loss times (mixed precision's dynamic scale; 1 in fp32 runs). */
  lossScale: number;
  receipts: number;
  /** Held-out validation loss: the latest (with the steps trained when it was measured) and the best. */
  validation: { step: number; loss: number; best: number } | null;
}

/** Until a peer has been measured, a task is assumed to take this long (only ratios matter for routing). */
const FALLBACK_TASK_MS = 1000;

/** A statement names at most this many receipts (the schema's limit); more go in the next one. */
const MAX_STATEMENT_RECEIPTS = 4096;

/** Two nodes, either way round: what keeps one tensor from going between them concerns both directions. */
const pairKey = (a: Peer, b: Peer): string => [a.nodeId, b.nodeId].sort().join('/');

interface FinishedAttempt extends AveragedGradients {
  result: AttemptResult;
  members: Peer[][];
}

/**
 * The network coordinator of one training run, composed of its planes (see coordinator/README.md): the
 * control plane (`sessions.ts`: connections, authentication, liveness; `stage-assignment.ts`: placement),
 * the data plane (`step-attempt.ts`: micro-batches through the stages), averaging (`averaging.ts`) and the
 * HTTP API (`http-api.ts`). This file runs the step loop and commits steps: receipts, progress, checkpoints.
 */
export class Coordinator extends EventEmitter {
  readonly run: RunShape;
  readonly metrics = new CoordinatorMetrics();
  readonly store: CoordinatorStore;
  readonly finished: Promise<void>;
  private readonly config: RunConfig;
  private readonly log: Logger;
  private readonly limits: WireLimits;
  private readonly sessions: Sessions;
  private readonly stages: StageAssignment;
  private readonly checkpointRoot: string;
  private server!: Server;
  private wss!: WebSocketServer;
  private watchdog!: NodeJS.Timeout;
  private taskIds = 0;
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
  private relay: Libp2p | null = null;
  /**
   * Pairs of nodes (by node id) whose tensors go through the coordinator for the rest of the run: one could
   * not reach the other, or they disputed a tensor sent peer to peer (the next lie about them is then seen,
   * not argued).
   */
  private readonly relayedPairs = new Set<string>();
  private readonly data: SplitCorpus;
  private readonly validations: ValidationHistory;
  private readonly gradientNorms = new GradientNorms();
  /** Mixed precision's dynamic loss scale (null in fp32 runs); a restart begins again at the initial scale. */
  private readonly scaler: LossScaler | null;
  private state: CoordinatorStatus['state'] = 'waiting';
  private reason = 'starting';
  private progressPushedAt = 0;
  private progressTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private wakers: Array<() => void> = [];
  private resolveFinished!: () => void;

  private constructor(private readonly options: CoordinatorOptions) {
    super();
    this.config = options.config;
    this.run = runShape(options.config);
    this.scaler = options.config.precision === 'mixed' ? new LossScaler(options.config.lossScaling) : null;
    this.data = new SplitCorpus(options.corpus, options.config.validation, options.config.microBatch);
    this.log = options.logger ?? pino({ name: 'coordinator' });
    this.limits = { ...defaultWireLimits, ...options.limits };
    mkdirSync(options.dataDir, { recursive: true });
    this.checkpointRoot = join(options.dataDir, 'checkpoints');
    this.store = new CoordinatorStore(options.dbPath ?? join(options.dataDir, 'coordinator.db'));
    this.store.claimRun(options.config.runId);
    this.validations = new ValidationHistory(this.store, (loss) => this.metrics.validationLoss.set(loss));
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
    this.sessions = new Sessions({
      config: this.config,
      run: this.run,
      publicKey: options.keys.publicKeyHex,
      sign: (data) => options.keys.sign(data),
      verify: options.verify,
      store: this.store,
      metrics: this.metrics,
      log: this.log,
      limits: this.limits,
      authTimeoutMs: options.authTimeoutMs,
      connectionLimits: { ...defaultConnectionLimits, ...options.connectionLimits },
      attemptNo: () => this.attemptNo,
      onResult: (peer, message, { tensors }) => this.onResult(peer, message, tensors),
      onJoin: () => this.wake(),
      onBadInput: (peer, message) => this.onBadInput(peer, message),
      onSendFailed: (peer, message) => this.onSendFailed(peer, message),
      relayAddrs: () => this.relayAddrs(),
      onWelcomed: (peer) =>
        peer.send(
          this.progress(
            this.store.losses().slice(-MAX_PROGRESS_LOSSES),
            this.validations.points().slice(-MAX_PROGRESS_LOSSES),
          ),
        ),
      onLost: (peer, reason, dropped) => {
        if (this.attempt && !this.attempt.isSettled && this.attempt.involves(peer)) {
          const stage = peer.stage === null ? '' : ` on stage ${peer.stage + 1}`;
          const left = `node ${peer.shortId}${stage} left (${reason})`;
          // A departure costs only its micro-batches, redone by a replica; what a dropped node produced
          // earlier in the attempt cannot be trusted, so the step is replayed without it.
          if (!dropped && this.attempt.reroute(peer)) {
            this.metrics.reroutes.inc();
            this.log.warn(
              { step: this.step, attempt: this.attemptNo },
              `${left}; its micro-batches rerouted`,
            );
          } else this.attempt.fail(left);
        }
        this.wake();
      },
    });
    this.stages = new StageAssignment({
      config: this.config,
      run: this.run,
      stageFlops: this.run.ranges.map((r) => stageTrainFlops(this.run.model, r, this.run.shape)),
      sessions: this.sessions,
      store: this.store,
      log: this.log,
      step: () => this.step,
      onPlaced: () => this.wake(),
    });
  }

  static async start(options: CoordinatorOptions): Promise<Coordinator> {
    const c = new Coordinator(options);
    c.resume();
    await c.listen();
    if (options.p2pRelay && options.config.dataPlane === 'p2p') await c.startRelay(options.p2pRelay);
    void c.loop();
    return c;
  }

  /** Bytes on the wire of every node connection so far, both ways (benchmarks: what the coordinator carries). */
  get wireBytes(): number {
    return this.sessions.wireBytes;
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

  private progress(
    losses: Array<{ step: number; loss: number }>,
    validation: Array<{ step: number; loss: number }> = [],
  ): Outgoing<RunProgress> {
    const { step, steps, microBatches, tokensPerSecond } = this.status();
    return { type: 'progress', step, steps, microBatches, tokensPerSecond, losses, validation };
  }

  /**
   * Pushes the run's progress to every node: at once with a new loss, else at most once a second (the last
   * change within that second still goes out, when the second is over).
   */
  private pushProgress(loss: { step: number; loss: number } | null): void {
    const wait = this.progressPushedAt + 1000 - Date.now();
    if (!loss && wait > 0) {
      this.progressTimer ??= setTimeout(() => {
        this.progressTimer = null;
        this.pushProgress(null);
      }, wait);
      return;
    }
    if (this.progressTimer) clearTimeout(this.progressTimer);
    this.progressTimer = null;
    this.progressPushedAt = Date.now();
    this.sessions.broadcast(this.progress(loss ? [loss] : []));
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
      nodes: this.sessions.authenticatedCount,
      stages: this.run.ranges.map((r) => ({
        index: r.index,
        firstBlock: r.firstBlock,
        endBlock: r.endBlock,
        nodes: this.sessions.membersOf(r.index).map((p) => p.nodeId),
        stashes: this.sessions.membersOf(r.index).map((p) => p.stashes),
      })),
      relayedBytes: this.relayed,
      relayedPairs: this.relayedPairs.size,
      lossScale: this.lossScale,
      receipts: this.store.receiptCount(),
      validation: this.validations.summary(),
    };
  }

  async close(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.wake();
    this.attempt?.fail('coordinator is shutting down');
    clearInterval(this.watchdog);
    if (this.progressTimer) clearTimeout(this.progressTimer);
    this.sessions.closeAll();
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.relay?.stop();
    this.store.close();
    this.resolveFinished();
  }

  // --- startup -------------------------------------------------------------------------------------------

  /** The circuit relay for the run's nodes: only a peer id that is an authenticated node's key may connect. */
  private async startRelay(listen: string[]): Promise<void> {
    this.relay = await startP2pHost({
      seed: randomBytes(32),
      listen,
      relayServer: true,
      allowInbound: (peer) => {
        const key = peer.publicKey?.raw;
        return key !== undefined && this.sessions.isAuthenticated(Buffer.from(key).toString('hex'));
      },
    });
    this.log.info({ addrs: this.relayAddrs() }, "circuit relay for the run's nodes");
  }

  /** Where the coordinator's circuit relay listens, told to nodes in their welcome. */
  relayAddrs(): string[] {
    return (this.relay?.getMultiaddrs() ?? []).map((a) => a.toString()).slice(0, 8);
  }

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
    this.loadProgress();
    this.metrics.step.set(this.step);
  }

  private loadProgress(): void {
    const progress = this.store.progress();
    this.step = progress.step;
    this.tokens = progress.tokens;
    this.lastLoss = progress.loss;
  }

  private async listen(): Promise<void> {
    const handler = httpApi({
      metrics: this.metrics,
      store: this.store,
      status: () => this.status(),
      tokensPerSecond: () => this.tokensPerSecond(),
    });
    this.server = this.options.tls ? createHttpsServer(this.options.tls, handler) : createHttpServer(handler);
    this.wss = new WebSocketServer({ server: this.server, maxPayload: this.limits.maxBytes });
    this.wss.on('connection', (socket, req) =>
      this.sessions.accept(socket, req.socket.remoteAddress ?? '', req.socket),
    );
    this.wss.on('error', (err) => this.log.error({ err }, 'websocket server error'));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
    });
    this.watchdog = setInterval(() => this.sessions.checkSilentPeers(), this.options.watchdogMs ?? 500);
    this.log.info({ url: this.url, runId: this.config.runId, step: this.step }, 'coordinator listening');
  }

  private onResult(
    peer: Peer,
    message: Extract<NodeMessage, { type: 'result' }>,
    tensors: Received<NodeMessage>['tensors'],
  ): void {
    const task = peer.tasks.get(message.taskId)!;
    peer.tasks.delete(message.taskId);
    const attempt = this.attempt;
    if (!attempt || task.attempt !== this.attemptNo || task.step !== this.step) return;
    const direction = task.kind === 'forward' ? 'forward' : 'backward';
    const limit = boundaryLimit(direction, this.lossScale);
    // Values, not only shapes: NaN, Inf or absurd numbers stop here, and their sender goes, not the stage
    // that would have received them.
    const bad =
      (message.loss === undefined ? null : lossProblem(message.loss)) ??
      (tensors[0] && task.kind !== 'evaluate'
        ? boundaryProblem(this.run, tensors[0], direction, limit)
        : null) ??
      (task.sendsToPeer ? sentProblem(message.sent, limit) : null);
    if (bad) return this.sessions.drop(peer, bad);
    if (message.overflow) {
      const reason = `node ${peer.shortId}'s scaled backward overflowed f16`;
      this.overflowed(peer, reason);
      return attempt.fail(reason);
    }
    // The coordinator's own clock, never the node's claim: a node that says it is fast is not routed more.
    const roundTrip = Date.now() - task.sentAt;
    peer.observeTaskTime(Math.max(roundTrip, 0.01));
    peer.observeLink(roundTrip, message.queuedMs ?? 0, message.busyMs);
    attempt.onResult(peer, task, message.loss, tensors);
    this.pushProgress(null);
  }

  /**
   * A consumer found the tensor a peer sent it bad, or it never came. The coordinator saw neither tensor, so
   * it asks the sender for what it sent: bad values there prove the sender wrong, and it goes. Otherwise
   * either may be lying and neither is dropped on the other's word: tensors between the two go through the
   * coordinator from now on, where their values are checked as any relayed tensor's, and the step is
   * replayed. A report about a task that took no input from a peer is a lie, and its sender goes.
   */
  private onBadInput(peer: Peer, message: Extract<NodeMessage, { type: 'badInput' }>): void {
    const task = peer.tasks.get(message.taskId);
    if (!task) return this.sessions.drop(peer, `reported bad input for task ${message.taskId}, never sent`);
    peer.tasks.delete(message.taskId);
    const attempt = this.attempt;
    // A report racing the abort of its attempt: the input was never going to come.
    if (!attempt || task.attempt !== this.attemptNo || task.step !== this.step) return;
    const sender = peer.stage === null ? null : attempt.producerOf(peer.stage, task);
    if (!sender)
      return this.sessions.drop(
        peer,
        `reported bad input for task ${message.taskId}, which took none from a peer`,
      );
    const direction = task.kind === 'backward' ? 'backward' : 'forward';
    const what = `micro-batch ${task.microBatch}'s ${direction === 'forward' ? 'activations' : 'gradient'}`;
    const unproven = (why: string): void =>
      this.relayPair(
        attempt,
        sender,
        peer,
        'dispute',
        `node ${peer.shortId} reports node ${sender.shortId}'s ${what} bad (${message.reason}) and ${why}`,
      );
    this.fetchSent(sender, this.attemptNo, task.microBatch, direction).then(
      (tensor) => {
        if (!tensor) return unproven('the sender no longer holds it');
        this.countRelayed(tensor.data.byteLength);
        const problem = boundaryProblem(
          this.run,
          tensor,
          direction,
          boundaryLimit(direction, this.lossScale),
        );
        if (problem)
          return this.sessions.drop(sender, `${problem} (found by node ${peer.shortId}, confirmed)`);
        unproven('what the sender hands back is sound');
      },
      (err: Error) => unproven(`the sender could not hand it back (${err.message})`),
    );
  }

  /**
   * A node could not send the tensor it was told to send a peer (the peer cannot be reached from it): the
   * two nodes' tensors go through the coordinator from now on, and the step is replayed. A claim about a
   * tensor it was never told to send is a lie; one about an attempt already over raced its abort.
   */
  private onSendFailed(peer: Peer, message: Extract<NodeMessage, { type: 'sendFailed' }>): void {
    const attempt = this.attempt;
    if (!attempt || message.attempt !== this.attemptNo || message.step !== this.step) return;
    const consumer = attempt.consumerOf(peer, message.microBatch, message.direction);
    if (!consumer)
      return this.sessions.drop(
        peer,
        `says it could not send micro-batch ${message.microBatch}'s ${message.direction} tensor, which it was never told to send`,
      );
    // A consumer that left is rerouted or replayed as it is: nothing to relay.
    if (consumer.channel.isClosed) return;
    this.relayPair(
      attempt,
      peer,
      consumer,
      'unreachable',
      `node ${peer.shortId} cannot reach node ${consumer.shortId} (${message.reason})`,
    );
  }

  /** Tensors between `a` and `b` go through the coordinator for the rest of the run; `attempt` is replayed. */
  private relayPair(
    attempt: StepAttempt,
    a: Peer,
    b: Peer,
    why: 'dispute' | 'unreachable',
    what: string,
  ): void {
    const pair = pairKey(a, b);
    if (!this.relayedPairs.has(pair)) this.metrics.relayedPairs.inc({ reason: why });
    this.relayedPairs.add(pair);
    const reason = `${what}: tensors between the two now go through the coordinator`;
    this.log.warn({ step: this.step, nodes: [a.shortId, b.shortId] }, reason);
    attempt.fail(reason);
  }

  /** Asks `peer` for the tensor it sent peer to peer in this step's attempt `attemptNo`. */
  private fetchSent(
    peer: Peer,
    attemptNo: number,
    microBatch: number,
    direction: Direction,
  ): Promise<Tensor | null> {
    const spec = boundarySpec(this.run, direction);
    return this.sessions.fetch(peer, this.step, attemptNo, microBatch, direction, spec);
  }

  private countRelayed(bytes: number): void {
    this.relayed += bytes;
    this.metrics.relayedBytes.inc(bytes);
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
    if (this.state !== state || state !== 'training')
      this.sessions.broadcast({ type: 'runState', state, reason });
    this.state = state;
    this.reason = reason;
  }

  private tokensPerSecond(): number {
    return this.trainingMs > 0 ? (this.tokensThisProcess * 1000) / this.trainingMs : 0;
  }

  private async loop(): Promise<void> {
    while (!this.stopping && this.step < this.config.steps) {
      try {
        await this.prepareStep();
        this.stepStarted = Date.now();
        const finished = await this.runAttempt();
        await this.commit(finished);
        if (validationDue(this.config.validation, this.step, this.config.steps)) await this.validate();
      } catch (err) {
        if (this.stopping) break;
        if (err instanceof Misbehaviour) this.sessions.drop(err.peer, err.message);
        if (err instanceof Overflow) this.overflowed(err.peer, err.message);
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

  private get lossScale(): number {
    return this.scaler?.scale ?? 1;
  }

  /**
   * A scaled backward overflowed f16: the scale halves and the step replays. At the smallest scale an
   * overflow is no longer the scale's doing, and its node goes (a node claiming overflows forever could
   * otherwise hold the run).
   */
  private overflowed(peer: Peer, reason: string): void {
    this.metrics.overflows.inc();
    if (this.scaler?.overflow()) {
      this.log.warn({ step: this.step, lossScale: this.scaler.scale, reason }, 'overflow: loss scale halved');
      return;
    }
    this.sessions.drop(peer, `${reason} at the smallest loss scale`);
  }

  private abortAttempt(reason: string): void {
    this.metrics.replays.inc({ reason: reason.startsWith('internal') ? 'internal' : 'peer' });
    this.log.warn(
      { step: this.step, attempt: this.attemptNo, reason },
      'step attempt abandoned; replaying it',
    );
    this.attempt?.fail(reason);
    this.attempt = null;
    for (const peer of this.sessions.peers) {
      if (peer.stage === null) continue;
      peer.clearWork();
      peer.send({ type: 'abort', step: this.step, attempt: this.attemptNo });
    }
  }

  /** Places joiners and waits until every stage has a replica holding the current weights. */
  private async prepareStep(): Promise<void> {
    for (;;) {
      if (this.stopping) throw new AttemptFailed('stopping');
      this.rollBackIfWeightsLost();
      const empty = await this.stages.place();
      if (empty.length === 0) {
        this.setState('training', `training step ${this.step + 1} of ${this.config.steps}`);
        return;
      }
      this.setState('waiting', waitingForStages(empty, this.config.stages));
      await this.changed(1000);
    }
  }

  /**
   * When every replica of a stage is gone between checkpoints, the current weights are lost: go back to the
   * latest checkpoint for all stages. Receipts already issued stay valid; redone units are not re-credited.
   */
  private rollBackIfWeightsLost(): void {
    const lost = this.stages.lostStages();
    if (lost.length === 0) return;
    const target = this.store.latestCheckpoint()?.step ?? 0;
    this.log.warn(
      { from: this.step, to: target, stages: lost },
      'every replica of a stage left; rolling back to the last checkpoint',
    );
    this.store.truncateSteps(target);
    this.loadProgress();
    this.stages.unplaceAll();
  }

  private microBatch(step: number, index: number): MicroBatch {
    return this.data.train.microBatch(this.config.seed, step, index, this.run.shape);
  }

  /** Starts an attempt over the live replicas; `evaluate` runs held-out micro-batches forward only. */
  private startAttempt(
    microBatches: number,
    batch: (index: number) => MicroBatch,
    mode: 'train' | 'evaluate',
  ): { attempt: StepAttempt; attemptNo: number; members: Peer[][] } {
    const attemptNo = ++this.attemptNo;
    const members = this.run.ranges.map((r) => this.sessions.membersOf(r.index));
    const batches = new Map<number, MicroBatch>();
    const attempt = new StepAttempt(
      {
        run: this.run,
        step: this.step,
        attempt: attemptNo,
        members,
        microBatch: (i) => batches.get(i) ?? batches.set(i, batch(i)).get(i)!,
        nextTaskId: () => ++this.taskIds,
        fallbackMs: FALLBACK_TASK_MS,
        lossScale: this.lossScale,
        dataPlane: this.config.dataPlane,
        onRelay: (bytes) => this.countRelayed(bytes),
        verification: this.config.verification,
        onProvenWrong: (peer, reason, part) => this.provenWrong(peer, reason, part),
        fetch: (peer, microBatch, direction) => this.fetchSent(peer, attemptNo, microBatch, direction),
        relays: (a, b) => this.relayedPairs.has(pairKey(a, b)),
        onDispute: (reason, part) => {
          this.metrics.verifications.inc({ verdict: 'disputed', part });
          this.log.warn({ step: this.step, reason }, 'verification dispute; replaying the step');
        },
      },
      microBatches,
      mode,
    );
    this.attempt = attempt;
    attempt.start();
    return { attempt, attemptNo, members };
  }

  private async runAttempt(): Promise<FinishedAttempt> {
    this.stepAttempts++;
    const step = this.step;
    const { attempt, attemptNo, members } = this.startAttempt(
      this.config.microBatchesPerStep,
      (i) => this.microBatch(step, i),
      'train',
    );
    const result = await attempt.done;
    const paramCounts = this.run.ranges.map((r) => stageParamCount(this.run.model, r));
    const averaged = await averageGradients(
      this.sessions.request,
      members,
      paramCounts,
      result.units,
      step,
      attemptNo,
      this.config.gradClip,
      this.gradientNorms,
      this.scaler === null ? null : this.lossScale,
    );
    return { ...averaged, result, members };
  }

  /**
   * A second replica (and a referee) proved `peer`'s forward or backward wrong: it is dropped and banned, so the attempt
   * replays without it and its gradients never reach the weights, and its credit since its last verified
   * unit is revoked by the next statement it is sent.
   */
  private provenWrong(peer: Peer, reason: string, part: CheckedPart): void {
    this.metrics.verifications.inc({ verdict: 'wrong', part });
    this.sessions.drop(peer, reason);
    const revoked = this.store.revokeUnverified(peer.nodeId, reason);
    this.log.warn({ node: peer.shortId, revoked, reason }, 'verification: node proven wrong');
    this.issueStatements(peer.nodeId);
  }

  /**
   * Sends committed receipts, then each node's signed credit statement confirming them: the step they
   * belong to is committed, so their credit is final. (Verification of work, when it comes, confirms later.)
   */
  private sendReceipts(stored: StoredReceipt[]): void {
    this.metrics.receipts.inc(stored.length);
    const byNode = new Map<string, Peer | undefined>();
    for (const { seq: receiptSeq, signed } of stored) {
      const nodeId = signed.receipt.nodeId;
      if (!byNode.has(nodeId))
        byNode.set(
          nodeId,
          [...this.sessions.peers].find((p) => p.nodeId === nodeId),
        );
      byNode.get(nodeId)?.send({ type: 'receipt', seq: receiptSeq, signed });
    }
    // One commit (one sync to disk) for every node's statement, not one each.
    const statements = this.store.atomically(() => [...byNode.keys()].map((id) => this.issueStatements(id)));
    [...byNode.values()].forEach((peer, i) => {
      for (const signed of statements[i]!) peer?.send({ type: 'credits', signed });
    });
  }

  /** Statements for every receipt of `nodeId` not yet in one, stored before they are sent. */
  private issueStatements(nodeId: string): SignedCreditStatement[] {
    const issued: SignedCreditStatement[] = [];
    for (;;) {
      const next = this.store.nextStatement(nodeId, MAX_STATEMENT_RECEIPTS);
      if (!next) return issued;
      const signed = signStatement(this.options.keys, {
        runId: this.config.runId,
        nodeId,
        seq: next.seq,
        receipts: next.receipts,
        confirmed: next.receiptIds,
        ...(next.verifiedIds.length > 0 ? { verified: next.verifiedIds } : {}),
        revoked: next.revoked,
        confirmedFlops: next.confirmedFlops,
        revokedFlops: next.revokedFlops,
        pendingFlops: 0,
      });
      this.store.addStatement(nodeId, next.seq, next.throughReceipt, signed);
      issued.push(signed);
    }
  }

  /** Applies the step on every replica, then records receipts, progress and (when due) a checkpoint. */
  private async commit({ result, members, ...averaged }: FinishedAttempt): Promise<void> {
    const step = this.step;
    const checkpointDue = (step + 1) % this.config.checkpointEvery === 0 || step + 1 === this.config.steps;
    const states = await applyStep(
      this.sessions.request,
      members,
      this.run.ranges.map((r) => stageParamCount(this.run.model, r)),
      averaged,
      step,
      this.config.adamw,
      checkpointDue,
      this.log,
    );
    this.attempt = null;
    this.scaler?.cleanStep();
    this.gradientNorms.record(averaged.judged);
    // A state that is not finite never becomes a checkpoint; its sender holds broken weights and goes.
    states.forEach((kept, stage) => {
      const problem = kept && stateProblem(kept.state);
      if (!problem) return;
      this.sessions.drop(kept!.from, problem);
      states[stage] = null;
    });
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
    const verified = new Set(
      result.units
        .filter((u) => u.verified)
        .map((u) => receiptId(this.config.runId, step, u.stage, u.microBatch)),
    );
    this.metrics.verifications.inc({ verdict: 'agreed', part: 'forward' }, verified.size);
    this.metrics.verifications.inc({ verdict: 'agreed', part: 'backward' }, result.backwardsVerified);
    this.sendReceipts(this.store.commitStep(step, loss, tokens, receipts, verified));
    if (states.every((s) => s !== null)) {
      const dir = saveCheckpoint(
        this.checkpointRoot,
        step + 1,
        this.run,
        this.config.runId,
        states.map((kept) => kept!.state),
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
    this.stages.forgetStates();
    this.metrics.step.set(this.step);
    this.metrics.loss.set(loss);
    this.run.ranges.forEach((r) =>
      this.metrics.stageNodes.set({ stage: String(r.index) }, this.sessions.membersOf(r.index).length),
    );
    const event: StepEvent = {
      step: this.step,
      loss,
      tokens: this.tokens,
      tokensPerSecond: this.tokensPerSecond(),
      stageNodes: this.run.ranges.map((r) => this.sessions.membersOf(r.index).length),
      attempts: this.stepAttempts,
    };
    this.stepAttempts = 0;
    this.log.info(event, 'step committed');
    this.pushProgress({ step, loss });
    this.emit('step', event);
  }

  /**
   * The held-out evaluation after `this.step` steps: fixed micro-batches of the corpus tail forward through
   * the pipeline, credited per stage forward like any other work (receipt micro-batch indices from
   * microBatchesPerStep up, so they never collide with the step's training units). A lost peer replays it.
   */
  private async validate(): Promise<void> {
    const { microBatches } = this.config.validation;
    const shape = this.run.shape;
    for (;;) {
      await this.prepareStep();
      this.setState('training', `validating on held-out data after step ${this.step}`);
      const { attempt } = this.startAttempt(
        microBatches,
        (i) => this.data.validationBatch(i, microBatches, shape),
        'evaluate',
      );
      let result: AttemptResult;
      try {
        result = await attempt.done;
      } catch (err) {
        if (this.stopping || !(err instanceof AttemptFailed)) throw err;
        this.abortAttempt(err.message);
        continue;
      }
      this.attempt = null;
      const loss = result.losses.reduce((a, b) => a + b, 0) / result.losses.length;
      const { best } = this.validations.record(this.step, loss);
      this.sessions.broadcast(this.progress([], [{ step: this.step - 1, loss }]));
      const receipts = result.units.map((u) =>
        signReceipt(this.options.keys, {
          runId: this.config.runId,
          receiptId: receiptId(
            this.config.runId,
            this.step,
            u.stage,
            this.config.microBatchesPerStep + u.microBatch,
          ),
          nodeId: u.peer.nodeId,
          stage: u.stage,
          step: this.step,
          microBatch: this.config.microBatchesPerStep + u.microBatch,
          tokens: shape.batch * shape.seq,
          flops:
            shape.batch *
            shape.seq *
            stageForwardFlopsPerToken(this.run.model, this.run.ranges[u.stage]!, shape.seq),
        }),
      );
      this.sendReceipts(this.store.creditReceipts(receipts));
      this.log.info({ step: this.step, validationLoss: loss, best }, 'validated on held-out data');
      this.emit('validation', { step: this.step, loss, best });
      return;
    }
  }
}
