import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import { WebSocket } from 'ws';
import {
  openCompression,
  type CompressionSettings,
  type RunCompression,
} from '../../gpu/codec/run-compression.js';
import { unflatten, flatten } from '../../gpu/model/flat-state.js';
import {
  splitBlocks,
  isFirstStage,
  isLastStage,
  type GptConfig,
  type MicroBatchShape,
  type Precision,
  type StageRange,
} from '../../gpu/model/config.js';
import { stageParamCount } from '../../gpu/model/params.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { authChallengeBytes, coordinatorProofBytes } from '../../shared/protocol/auth.js';
import { Channel } from '../../shared/protocol/channel.js';
import type { BoundaryShape, Direction } from '../../shared/protocol/codec.js';
import { boundaryTensorSpec, decodeBoundary } from '../../shared/protocol/codec-tensor.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import {
  coordinatorMessageSchema,
  type CoordinatorMessage,
  type EngineKind,
  type NodeMessage,
  type P2pAddress,
} from '../../shared/protocol/messages.js';
import { boundaryProblem, gradientLimit, summarizeValues } from '../../shared/protocol/tensor-values.js';
import { MAX_LOSS_SCALE } from '../../gpu/train/loss-scaler.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import { stageLabel } from '../../shared/stage-label.js';
import { stateFromTensors, stateSpec, stateTensors } from '../../shared/protocol/stage-state.js';
import {
  ProtocolError,
  WireReader,
  defaultWireLimits,
  type Received,
  type TensorSpec,
} from '../../shared/protocol/wire.js';
import { MemoryCoordinatorPins, type CoordinatorPins } from '../identity/coordinator-pins.js';
import { verifyEd25519 } from '../identity/ed25519.js';
import { verifyReceipt } from '../identity/receipts.js';
import { alwaysOpen, type ReceiptSink, type WorkGate } from './hooks.js';
import type { StageSpec } from './stage-factory.js';
import { WorkerStage } from './engine-host.js';
import type { LinkShape } from './link-shaping.js';
import { InputCancelled, PeerRefused, PeerTensors, summarize, type PeerLink } from './peer-tensors.js';
import { StageBoundary } from './stage-boundary.js';

export interface NodeKeys {
  readonly publicKeyHex: string;
  sign(data: Uint8Array): Uint8Array;
  /** The private seed: in a peer-to-peer run the libp2p peer id is this same key (random without it). */
  seed?(): Uint8Array;
}

export interface NodeRuntimeOptions {
  /** ws:// or wss:// URL of the coordinator. */
  coordinatorUrl: string;
  keys: NodeKeys;
  engine: EngineKind;
  gate?: WorkGate;
  sink?: ReceiptSink;
  /** Refuse coordinators whose key is not this one (hex). */
  coordinatorKey?: string;
  /**
   * Coordinator keys learned on first contact, by URL (trust on first use); afterwards a different key is
   * refused. Defaults to this runtime's memory. An explicit coordinatorKey replaces the pin.
   */
  pins?: CoordinatorPins;
  /** Where this node's credit is paid; sent to the coordinator on every connect when set. */
  payoutAddress?: () => string | null;
  /** Builds the stage; defaults to the engine in a worker thread. */
  createStage?: (engine: EngineKind, spec: StageSpec) => Promise<StageTrainer>;
  logger?: Logger;
  /** The GPU engine's matmul tuning cache, a JSON file in the data directory (kept across runs). */
  tuningCachePath?: string;
  /** First reconnect delay; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /**
   * Where the libp2p host listens in a peer-to-peer run; default TCP and WebSockets on 127.0.0.1.
   * `<relay multiaddr>/p2p-circuit` listens through that circuit relay v2 server.
   */
  p2pListen?: string[];
  /** Shapes the connections neighbours dial to this node's libp2p host (a ShapedProxy in front of it). */
  p2pLink?: LinkShape;
  /**
   * How long a task waits for its input from the peer named before reporting that it never came (the
   * sender told the coordinator it was sent before this node was given the task); default what the
   * coordinator's welcome says, else 15 s.
   */
  p2pInputTimeoutMs?: number;
  /** Extra TLS options for wss:// (e.g. a private CA). */
  ca?: string;
  /**
   * Highest receipt sequence number the ReceiptSink already stored (e.g. from the ledger); the coordinator
   * re-sends every receipt after it on each connect. 0 (default) asks for all; the sink drops duplicates.
   */
  receiptCursor?: number;
  /**
   * Asked before a stage is allocated: a reason to refuse it (a VRAM cap), or the most bytes the engine may
   * allocate for it. A refused assignment goes back to the coordinator with nothing allocated.
   */
  admitStage?: (
    range: StageRange,
    spec: { config: GptConfig; shape: MicroBatchShape },
  ) => { ok: false; reason: string } | { ok: true; maxBytes?: number };
}

export interface NodeStatus {
  connected: boolean;
  stage: StageRange | null;
  step: number;
  receipts: number;
  creditedFlops: number;
  reason: string;
  /** Micro-batches the stage can hold between forward and backward (1F1B), once a stage is loaded. */
  stashes?: number;
  /** Tensor payload bytes sent straight to other nodes (peer-to-peer runs). */
  peerBytes?: number;
  /** Peer-to-peer runs: this node's libp2p peer id and the addresses it gives its neighbours. */
  p2p?: P2pAddress;
  /** Peer-to-peer runs, by neighbour peer id: whether its tensors come (`in`) and go (`out`) direct or relayed. */
  peerLinks?: Record<string, PeerLink>;
}

/** 1F1B holds at most S micro-batches on a stage; more would only be memory nobody uses. */
const MAX_STASHES = 64;

/** The host a coordinator URL names (brackets of an IPv6 literal dropped); undefined when it does not parse. */
function hostnameOf(url: string): string | undefined {
  try {
    return new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
  } catch {
    return undefined;
  }
}

/** Past this a peer's tensor is reported missing, where the coordinator does not say: half its default task timeout. */
const P2P_INPUT_TIMEOUT_MS = 15_000;

/** A message from the coordinator waiting for the engine, with when it arrived. */
interface Pending {
  channel: Channel<CoordinatorMessage, NodeMessage>;
  message: CoordinatorMessage;
  tensors: Tensor[];
  arrived: number;
}

function isForwardTask(message: CoordinatorMessage): boolean {
  return message.type === 'task' && message.kind !== 'backward';
}

function describeStage(range: StageRange): string {
  return stageLabel({ ...range, lastBlock: range.endBlock - 1 });
}

interface Session {
  runId: string;
  model: GptConfig;
  shape: MicroBatchShape;
  stages: number;
  seed: number;
  coordinatorKey: string;
  compression: CompressionSettings;
  codec: RunCompression['codec'];
  precision: Precision;
  /** Peer to peer: how long a task waits for its input (the coordinator's word; absent from older ones). */
  inputTimeoutMs?: number;
  /** Peer to peer: the coordinator's circuit relay, if it serves one. */
  p2pRelay?: string[];
}

/**
 * A contributor node: connects to the coordinator, proves its identity, trains the stage it is given on a
 * micro-batch at a time, and keeps going through disconnects (exponential backoff). The WorkGate is asked
 * before each micro-batch and told how long it ran; verified receipts go to the ReceiptSink.
 */
export class NodeRuntime extends EventEmitter {
  private readonly log: Logger;
  private readonly gate: WorkGate;
  private readonly pins: CoordinatorPins;
  private socket: WebSocket | null = null;
  private channel: Channel<CoordinatorMessage, NodeMessage> | null = null;
  private session: Session | null = null;
  private stage: StageTrainer | null = null;
  private range: StageRange | null = null;
  /**
   * Micro-batches whose activations the stage holds for their backward pass (several under 1F1B), by
   * step/attempt/micro-batch, with the engine's stash id (0 for the last forward's, when the engine cannot stash).
   */
  private readonly resident = new Map<string, number>();
  private stashIds = 0;
  /** The nonce of this connection's hello, which the coordinator signs to prove its key. */
  private helloNonce = '';
  /**
   * Tensors this node sent peer to peer in the current step, by step/attempt/micro-batch/direction: the
   * coordinator fetches one when its consumer left and a replica redoes the consumer's part.
   */
  private readonly sentTensors = new Map<string, Tensor>();
  /** The libp2p data plane, started at the first welcome of a peer-to-peer run. */
  private peerTensors: Promise<PeerTensors> | null = null;
  /** Messages waiting for the engine, in the order they run (see enqueue). */
  private readonly pending: Pending[] = [];
  /** Settles when the pending messages have all run. */
  private work: Promise<void> = Promise.resolve();
  private stopped = false;
  private paused = false;
  private backoff: number;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();
  private receiptCursor = 0;
  private readonly seenReceipts = new Set<string>();
  readonly status: NodeStatus = {
    connected: false,
    stage: null,
    step: 0,
    receipts: 0,
    creditedFlops: 0,
    reason: 'starting',
  };

  constructor(private readonly options: NodeRuntimeOptions) {
    super();
    this.log = options.logger ?? pino({ name: 'node' });
    this.gate = options.gate ?? alwaysOpen;
    this.backoff = options.backoffMs ?? 250;
    this.receiptCursor = options.receiptCursor ?? 0;
    this.pins = options.pins ?? new MemoryCoordinatorPins();
    const url = options.coordinatorUrl;
    if (options.coordinatorKey && this.pins.get(url) !== options.coordinatorKey)
      this.pins.set(url, options.coordinatorKey);
  }

  get nodeId(): string {
    return this.options.keys.publicKeyHex;
  }

  /** Sequence number of the newest receipt received (pass it back as `receiptCursor` after a restart). */
  get lastReceiptSeq(): number {
    return this.receiptCursor;
  }

  start(): void {
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.channel?.close(1000, 'node stopping');
    this.socket?.terminate();
    await this.work.catch(() => {});
    this.stage?.destroy();
    this.stage = null;
    await (await this.peerTensors?.catch(() => null))?.stop();
  }

  private setReason(reason: string): void {
    this.status.reason = reason;
    this.emit('status', { ...this.status });
  }

  private connect(): void {
    if (this.stopped) return;
    // Retries keep the reason that says why the last attempt failed.
    if (this.status.reason === 'starting') this.setReason(`connecting to ${this.options.coordinatorUrl}`);
    const socket = new WebSocket(this.options.coordinatorUrl, {
      maxPayload: defaultWireLimits.maxBytes,
      ca: this.options.ca,
    });
    this.socket = socket;
    const reader = new WireReader<CoordinatorMessage>(
      coordinatorMessageSchema,
      (m): TensorSpec[] => this.expect(m),
      defaultWireLimits,
    );
    const channel = new Channel<CoordinatorMessage, NodeMessage>(
      socket,
      reader,
      (received): void => this.onMessage(received),
      (error): void => this.log.warn({ err: error.message }, 'coordinator sent an invalid message'),
    );
    this.channel = channel;
    socket.on('open', () => {
      this.status.connected = true;
      this.helloNonce = randomBytes(32).toString('base64');
      channel.send({
        type: 'hello',
        nodeId: this.nodeId,
        client: 'tributary-node/0.1',
        engine: this.options.engine,
        receiptCursor: this.receiptCursor,
        nonce: this.helloNonce,
      });
    });
    socket.on('message', (data: Buffer, isBinary: boolean) =>
      channel.receive(
        isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'),
      ),
    );
    let failure: string | null = null;
    socket.on('error', (err) => {
      failure = err.message;
      this.log.debug({ err: err.message }, 'connection error');
    });
    socket.on('close', (code, reason) => {
      channel.markClosed();
      if (this.socket !== socket) return;
      const wasOpen = this.status.connected;
      this.status.connected = false;
      this.resident.clear();
      this.emit('disconnected', { code, reason: reason.toString() });
      if (this.stopped || this.paused) return;
      const delay = Math.round(this.backoff * (0.75 + Math.random() * 0.5));
      this.backoff = Math.min(this.backoff * 2, this.options.maxBackoffMs ?? 10_000);
      const why = wasOpen
        ? `disconnected (${code}${reason.length ? `: ${reason.toString()}` : ''})`
        : `cannot reach the coordinator at ${this.options.coordinatorUrl} (${failure ?? `closed with ${code}`}); ` +
          `is it running, and are the host and port right?`;
      this.emit('retrying', { delayMs: delay, why });
      this.setReason(`${why}${wasOpen ? ';' : ''} retrying in ${(delay / 1000).toFixed(1)} s`);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    });
  }

  private boundary(): BoundaryShape {
    const { model, shape } = this.need();
    return { ...shape, width: model.width };
  }

  private activationSpec(direction: Direction): TensorSpec {
    return boundaryTensorSpec(this.need().codec, this.boundary(), direction);
  }

  private need(): Session {
    if (!this.session) throw new ProtocolError('unexpected', 'work sent before welcome');
    return this.session;
  }

  /** The tensors each coordinator message must carry, given the run and our stage. */
  private expect(m: CoordinatorMessage): TensorSpec[] {
    switch (m.type) {
      case 'assign': {
        const { model, stages } = this.need();
        const want = stages === m.range.count ? splitBlocks(model, stages)[m.range.index] : undefined;
        if (!want || want.firstBlock !== m.range.firstBlock || want.endBlock !== m.range.endBlock) {
          throw new ProtocolError('bad-message', 'assigned stage range does not match the run');
        }
        return stateSpec(stageParamCount(model, m.range));
      }
      case 'task': {
        const range = this.range;
        if (!range) throw new ProtocolError('unexpected', 'task before a stage was assigned');
        const { shape } = this.need();
        const tokens: TensorSpec = { dtype: 'i32', shape: [shape.batch, shape.seq] };
        // An input from a peer comes over libp2p, not with the task.
        const input = isFirstStage(range) ? [tokens] : m.inputFrom ? [] : [this.activationSpec('forward')];
        if (m.kind === 'forward') return input;
        if (m.kind === 'forwardBackward' || m.kind === 'evaluate') return [...input, tokens];
        // A check's recompute of a backward brings the forward's input too.
        if (m.verifyOnly) return [...input, this.activationSpec('backward')];
        return m.inputFrom ? [] : [this.activationSpec('backward')];
      }
      case 'apply':
        if (!this.range) throw new ProtocolError('unexpected', 'apply before a stage was assigned');
        return m.own ? [] : [{ dtype: 'f32', shape: [stageParamCount(this.need().model, this.range)] }];
      default:
        return [];
    }
  }

  private onMessage({ message, tensors }: Received<CoordinatorMessage>): void {
    switch (message.type) {
      case 'challenge':
        return this.onChallenge(message.nonce, message.coordinatorKey, message.signature);
      case 'welcome': {
        let codec: RunCompression['codec'];
        try {
          codec = openCompression(message.compression, message.model, message.seed, message.stages).codec;
        } catch (err) {
          // A run this node cannot take part in: say why, take no work, and stop retrying.
          const reason = `refused run ${message.runId}: ${(err as Error).message}`;
          this.log.error({ compression: message.compression }, reason);
          this.channel?.send({ type: 'error', code: 'unsupported-codec', message: reason.slice(0, 2000) });
          this.stopped = true;
          this.channel?.close(4003, 'unsupported codec');
          this.setReason(reason);
          return;
        }
        this.session = {
          runId: message.runId,
          model: message.model,
          shape: message.shape,
          stages: message.stages,
          seed: message.seed,
          coordinatorKey: this.session?.coordinatorKey ?? '',
          compression: message.compression,
          codec,
          precision: message.precision ?? 'fp32',
          inputTimeoutMs: message.inputTimeoutMs,
          p2pRelay: message.p2pRelay,
        };
        this.backoff = this.options.backoffMs ?? 250;
        this.emit('connected', { runId: message.runId });
        this.setReason('connected; waiting for a stage');
        {
          const address = this.options.payoutAddress?.() ?? null;
          if (address) this.channel?.send({ type: 'payout', address });
        }
        const p2p = message.dataPlane === 'p2p' ? this.startPeerTensors() : Promise.resolve(null);
        void Promise.all([p2p, this.gate.waitUntilAllowed(this.abort.signal)]).then(
          ([peers]) => this.channel?.send({ type: 'join', p2p: peers?.address }),
          (err: Error) => this.log.error({ err: err.message }, 'could not ask for work'),
        );
        return;
      }
      case 'receipt':
        return this.onReceipt(message.seq, message.signed);
      case 'credits':
        // The sink (the ledger) checks the signature, the signer and the node before it applies anything.
        this.options.sink?.acceptStatement?.(message.signed);
        this.emit('credits', message.signed);
        return;
      case 'runState':
        this.emit('runState', { state: message.state, reason: message.reason });
        return this.setReason(`run ${message.state}: ${message.reason}`);
      case 'progress':
        this.emit('progress', message);
        return;
      case 'error':
        this.log.warn({ code: message.code, error: message.message }, 'coordinator refused a message');
        return;
      case 'pong':
        return;
      case 'fetch': {
        // Answered at once, ahead of queued work: a replica waits for this tensor to redo a lost peer's part.
        const { step, attempt, microBatch, direction } = message;
        const held = this.sentTensors.get(`${step}/${attempt}/${microBatch}/${direction}`);
        this.channel?.send(
          { type: 'fetched', step, attempt, microBatch, direction, held: held !== undefined },
          held ? [held] : [],
        );
        return;
      }
      case 'abort':
        // A task waiting for a peer's tensor must not hold the queue the abort waits in.
        void this.peerTensors?.then(
          (p) => p.cancel(message.attempt),
          () => {},
        );
        return this.enqueue(message, tensors);
      default:
        this.enqueue(message, tensors);
    }
  }

  private startPeerTensors(): Promise<PeerTensors> {
    const seed = this.options.keys.seed?.() ?? randomBytes(32);
    this.peerTensors ??= PeerTensors.start({
      seed,
      listen: this.options.p2pListen,
      relay: this.session?.p2pRelay,
      coordinatorHost: hostnameOf(this.options.coordinatorUrl),
      onLinks: (links) => this.emit('peerLinks', { ...links }),
      link: this.options.p2pLink,
      spec: (direction) => this.activationSpec(direction),
      log: this.log,
    }).then((peers) => {
      this.status.p2p = peers.address;
      this.status.peerLinks = peers.links;
      return peers;
    });
    return this.peerTensors;
  }

  /**
   * A task's boundary input from the peer the coordinator named, checked for values as the coordinator
   * checks relayed ones; a bad one, one that never came, or a stream that broke the protocol is reported to
   * the coordinator, which settles it with the sender (coordinator.ts onBadInput). Null: aborted, or
   * reported.
   */
  private async peerInput(
    channel: Channel<CoordinatorMessage, NodeMessage>,
    task: Extract<CoordinatorMessage, { type: 'task' }>,
    from: string,
  ): Promise<Tensor | null> {
    const direction = task.kind === 'backward' ? 'backward' : 'forward';
    const { step, attempt, microBatch } = task;
    let input: Tensor | null = null;
    let problem: string | null;
    try {
      input = await (
        await this.peerTensors!
      ).receive(
        from,
        { step, attempt, microBatch, direction },
        this.options.p2pInputTimeoutMs ?? this.need().inputTimeoutMs ?? P2P_INPUT_TIMEOUT_MS,
      );
      // Gradients carry mixed precision's loss scale, which the node is not told: bounded by its largest.
      const mixed = direction === 'backward' && this.need().precision === 'mixed';
      problem = boundaryProblem(
        this.need(),
        input,
        direction,
        mixed ? gradientLimit(MAX_LOSS_SCALE) : undefined,
      );
    } catch (err) {
      if (err instanceof InputCancelled) return null;
      if (!(err instanceof PeerRefused)) throw err;
      problem = err.message;
    }
    if (!problem) return input;
    this.log.warn({ from, problem }, 'a peer sent a bad tensor; reported');
    channel.send({ type: 'badInput', taskId: task.taskId, reason: problem.slice(0, 500) });
    return null;
  }

  /** Runs `work` and puts the stage's accumulated gradients back as they were before it. */
  private async gradientsKept(stage: StageTrainer, work: () => Promise<void>): Promise<void> {
    const saved = await stage.exportGrads();
    try {
      await work();
    } finally {
      await stage.importGrads(saved);
    }
  }

  private onChallenge(nonce: string, coordinatorKey: string, proofSignature: string | undefined): void {
    const url = this.options.coordinatorUrl;
    const pinned = this.options.coordinatorKey ?? this.pins.get(url);
    // The key shown must be the key held: otherwise anyone at the address could show the pinned public key.
    const proof = coordinatorProofBytes(this.helloNonce, nonce, coordinatorKey, this.nodeId);
    if (!proofSignature || !verifyEd25519(coordinatorKey, proof, Buffer.from(proofSignature, 'base64'))) {
      return this.refuseCoordinator(
        `the coordinator at ${url} could not prove it holds the key ${coordinatorKey.slice(0, 16)}… it shows`,
      );
    }
    if (pinned === null) {
      this.pins.set(url, coordinatorKey);
      this.emit('pinned', coordinatorKey);
    } else if (pinned !== coordinatorKey) {
      return this.refuseCoordinator(
        `the coordinator's key ${coordinatorKey.slice(0, 16)}… is not the pinned one (${pinned.slice(0, 16)}…)`,
      );
    }
    this.session = this.session ? { ...this.session, coordinatorKey } : ({ coordinatorKey } as Session);
    const mine = Buffer.from(
      this.options.keys.sign(authChallengeBytes(nonce, coordinatorKey, this.nodeId)),
    ).toString('base64');
    this.channel?.send({ type: 'auth', signature: mine });
  }

  private refuseCoordinator(why: string): void {
    this.log.error({ why }, 'refusing the coordinator; disconnecting');
    this.emit('refused', why);
    this.stopped = true;
    // The node stops for good: its status must not go on saying it trains (a challenge can come mid-run;
    // found by test/adversarial/message-fuzz.test.ts).
    this.setReason(`refused the coordinator: ${why}`);
    this.channel?.close(4002, 'unexpected coordinator key');
  }

  private onReceipt(seq: number, signed: SignedReceipt): void {
    const key = this.session?.coordinatorKey;
    if (signed.receipt.nodeId !== this.nodeId || !verifyReceipt(signed, key)) {
      this.log.error({ seq }, 'receipt failed verification; ignored');
      return;
    }
    this.receiptCursor = Math.max(this.receiptCursor, seq);
    if (this.seenReceipts.has(signed.receipt.receiptId)) return;
    this.seenReceipts.add(signed.receipt.receiptId);
    this.status.receipts++;
    this.status.creditedFlops += signed.receipt.flops;
    this.options.sink?.accept(signed);
    this.emit('receipt', signed, seq);
  }

  /**
   * Work runs one message at a time, in the order the coordinator sent it, except that a backward task goes
   * ahead of the forward tasks queued behind the last other message: the coordinator keeps several tasks
   * out to hide the link's round trip, and a gradient that waits behind a forward holds up every stage
   * before this one (1F1B). Backwards keep their own order, so gradients accumulate in micro-batch order.
   */
  private enqueue(message: CoordinatorMessage, tensors: Tensor[]): void {
    const entry: Pending = { channel: this.channel!, message, tensors, arrived: performance.now() };
    // pending[0] is the message running now.
    let at = this.pending.length;
    if (message.type === 'task' && message.kind === 'backward')
      while (at > 1 && isForwardTask(this.pending[at - 1]!.message)) at--;
    this.pending.splice(at, 0, entry);
    if (this.pending.length === 1) this.work = this.drain();
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const { channel, message, tensors, arrived } = this.pending[0]!;
      if (!channel.isClosed) {
        try {
          await this.handle(channel, message, tensors, arrived);
        } catch (err) {
          this.log.error({ err: (err as Error).message, type: message.type }, 'work failed');
          channel.send({
            type: 'error',
            code: 'work-failed',
            message: (err as Error).message.slice(0, 1000),
          });
          // The engine may be broken (a lost device, a dead thread): the next assignment builds a fresh one.
          this.stage?.destroy();
          this.stage = null;
          this.range = null;
          this.resident.clear();
        }
      }
      this.pending.shift();
    }
  }

  private async handle(
    channel: Channel<CoordinatorMessage, NodeMessage>,
    message: CoordinatorMessage,
    tensors: Tensor[],
    arrived: number,
  ): Promise<void> {
    switch (message.type) {
      case 'assign':
        return this.load(
          channel,
          message.range,
          message.step,
          stateFromTensors(message.optimizerStep, tensors),
        );
      case 'task':
        return this.runTask(channel, message, tensors, arrived);
      case 'abort':
        this.resident.clear();
        this.sentTensors.clear();
        this.stage?.zeroGrad();
        return;
      case 'gradsRequest': {
        const grads = await this.needStage().exportGrads();
        const { step, attempt } = message;
        if (message.summary) channel.send({ type: 'grads', step, attempt, summary: summarizeValues(grads) });
        else
          channel.send({ type: 'grads', step, attempt }, [
            { dtype: 'f32', shape: [grads.length], data: grads },
          ]);
        return;
      }
      case 'apply': {
        const stage = this.needStage();
        if (!message.own) await stage.importGrads(tensors[0]!.data as Float32Array);
        this.sentTensors.clear();
        await stage.step(message.adamw, message.clipScale);
        stage.zeroGrad();
        this.status.step = message.step + 1;
        const state = message.sendState ? flatten(await stage.exportState(), stage.paramCount) : null;
        channel.send(
          { type: 'applied', step: message.step, optimizerStep: state?.optimizerStep ?? 0 },
          state ? stateTensors(state) : [],
        );
        return;
      }
      case 'stateRequest': {
        const stage = this.needStage();
        const state = flatten(await stage.exportState(), stage.paramCount);
        channel.send(
          { type: 'state', requestId: message.requestId, optimizerStep: state.optimizerStep },
          stateTensors(state),
        );
        return;
      }
      default:
        return;
    }
  }

  /** True when the gate lets work start now; a gate that would make us wait means the policy paused us. */
  private gateIsOpen(): Promise<boolean> {
    return Promise.race([
      this.gate.waitUntilAllowed(this.abort.signal).then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 0)),
    ]);
  }

  /**
   * Paused with work in hand: disconnect so the coordinator replays the micro-batch elsewhere at once (a
   * clean close is not a failure and earns no ban), then come back when the gate opens.
   */
  private async handBack(channel: Channel<CoordinatorMessage, NodeMessage>): Promise<void> {
    this.paused = true;
    this.setReason('paused by policy; handed the micro-batch back');
    channel.close(4003, 'paused by policy');
    this.socket?.terminate();
    try {
      await this.gate.waitUntilAllowed(this.abort.signal);
    } catch {
      return;
    } finally {
      this.paused = false;
    }
    if (!this.stopped) this.connect();
  }

  /**
   * The coordinator never has more than the stash capacity in flight here, so a full stash only holds
   * forwards whose backward will not come (held-out validation, an abandoned attempt): drop the oldest.
   */
  private async makeRoomForForward(stage: StageTrainer, stashing: boolean): Promise<void> {
    if (!stashing) return this.resident.clear();
    for (const [unit, stashId] of this.resident) {
      if (this.resident.size < this.stashes(stage)) return;
      this.resident.delete(unit);
      // Restoring makes it the working set, which the next forward overwrites.
      await stage.restore!(stashId);
    }
  }

  /** Micro-batches the stage holds at once: its stash capacity when it can stash, else the last forward's. */
  private stashes(stage: StageTrainer): number {
    return stage.stash && stage.restore
      ? Math.min(MAX_STASHES, Math.max(1, Math.floor(stage.stashCapacity ?? 1)))
      : 1;
  }

  /** A non-finite backward in a mixed-precision run: the scaled gradients overflowed f16, not a fault. */
  private overflowed(err: unknown): boolean {
    return this.need().precision === 'mixed' && (err as Error).name === 'NonFiniteError';
  }

  private needStage(): StageTrainer {
    if (!this.stage) throw new Error('no stage is loaded');
    return this.stage;
  }

  private async load(
    channel: Channel<CoordinatorMessage, NodeMessage>,
    range: StageRange,
    step: number,
    state: ReturnType<typeof stateFromTensors>,
  ): Promise<void> {
    const { model, shape, seed, compression, precision } = this.need();
    const same = this.range && this.range.index === range.index && this.range.count === range.count;
    if (!same || !this.stage) {
      this.stage?.destroy();
      this.stage = null;
      const admission = this.options.admitStage?.(range, { config: model, shape }) ?? { ok: true };
      if (!admission.ok) {
        this.setReason(`refused ${describeStage(range)}: ${admission.reason}`);
        throw new Error(admission.reason);
      }
      this.setReason(`loading ${describeStage(range)}`);
      const create =
        this.options.createStage ??
        ((engine, spec) =>
          WorkerStage.create(engine, spec, {
            tuningCachePath: this.options.tuningCachePath,
            log: (line) => this.log.info(line),
          }));
      this.stage = await create(this.options.engine, {
        config: model,
        range,
        shape,
        seed,
        maxBytes: admission.maxBytes,
        compression,
        precision,
      });
    }
    await this.stage.importState(unflatten(model, range, state));
    this.stage.zeroGrad();
    this.range = range;
    this.resident.clear();
    this.status.stage = range;
    this.status.step = step;
    this.emit('assigned', range, { config: model, shape });
    this.status.stashes = this.stashes(this.stage);
    this.setReason(`training ${describeStage(range)}`);
    channel.send({ type: 'loaded', step, stashes: this.status.stashes });
  }

  private async runTask(
    channel: Channel<CoordinatorMessage, NodeMessage>,
    task: Extract<CoordinatorMessage, { type: 'task' }>,
    tensors: Tensor[],
    arrived: number,
  ): Promise<void> {
    const stage = this.needStage();
    const range = this.range!;
    if (!(await this.gateIsOpen())) {
      await this.handBack(channel);
      return;
    }
    if (task.inputFrom) {
      const input = await this.peerInput(channel, task, task.inputFrom);
      if (!input) return;
      tensors = [input, ...tensors];
    }
    const started = performance.now();
    // Time the task waited here (behind other work, or for its input): the coordinator subtracts it and the
    // compute from its own round-trip clock to learn the link's latency, which sets how many tasks it keeps out.
    const queuedMs = started - arrived;
    const unit = `${task.step}/${task.attempt}/${task.microBatch}`;
    const input = tensors[0]!;
    const { codec } = this.need();
    const boundary = this.boundary();
    const io = new StageBoundary(stage, codec, boundary);
    let loss: number | undefined;
    let out: Tensor | null = null;
    let overflow = false;
    const stashing = this.stashes(stage) > 1;
    const backward = async (gradOut: Tensor | null): Promise<void> => {
      try {
        out = await io.backward(gradOut, task.lossScale);
      } catch (err) {
        if (!this.overflowed(err)) throw err;
        overflow = true;
      }
    };
    if (task.kind === 'backward' && task.verifyOnly) {
      // A check's recompute of another replica's backward: its forward and backward in the working set (left
      // free, as for a forward's recompute), and only the input gradient kept.
      await this.gradientsKept(stage, async () => {
        await io.forward(input, false);
        await backward(tensors[1]!);
      });
    } else if (task.kind === 'backward') {
      const stashId = this.resident.get(unit);
      if (stashId === undefined)
        throw new Error(`backward of micro-batch ${task.microBatch} without its forward`);
      this.resident.delete(unit);
      if (stashing) await stage.restore!(stashId);
      await backward(input);
    } else {
      const first = isFirstStage(range);
      if (task.kind === 'forward') {
        // A check's recompute runs in the working set, which the coordinator leaves free (every held
        // micro-batch is stashed, or none is held), and is never stashed: no backward will ask for it.
        if (!task.verifyOnly) await this.makeRoomForForward(stage, stashing);
        const result = await io.forward(input, first);
        if (result.kind !== 'tensor') throw new Error('a forward task reached the last stage');
        out = result.tensor;
        if (!task.verifyOnly) {
          const stashId = stashing ? ++this.stashIds : 0;
          if (stashing) await stage.stash!(stashId);
          this.resident.set(unit, stashId);
        }
      } else {
        if (!isLastStage(range)) throw new Error(`${task.kind} sent to a stage that is not the last`);
        const lastStage = async (): Promise<void> => {
          const result = await io.forward(input, first, tensors[1]!.data as Int32Array);
          if (result.kind !== 'loss') throw new Error('the last stage returned no loss');
          loss = result.loss;
          // Held-out validation stops at the loss: nothing may reach the gradients.
          if (task.kind === 'forwardBackward') await backward(null);
        };
        // A check's recompute of another replica's backward keeps only the loss and the input gradient.
        if (task.verifyOnly && task.kind === 'forwardBackward') await this.gradientsKept(stage, lastStage);
        else await lastStage();
      }
    }
    const busyMs = performance.now() - started;
    if (overflow) {
      this.log.info({ step: task.step, microBatch: task.microBatch }, 'the scaled backward overflowed f16');
      channel.send({ type: 'result', taskId: task.taskId, loss, busyMs, queuedMs, overflow: true });
    } else if (task.sendTo && out) {
      const direction = task.kind === 'forward' ? 'forward' : 'backward';
      const sent = summarize(decodeBoundary(codec, out, boundary, direction).data);
      const { step, attempt, microBatch } = task;
      const peers = await this.peerTensors!;
      // The result first: the coordinator's task to the consumer then travels while the tensor does.
      channel.send({ type: 'result', taskId: task.taskId, loss, busyMs, queuedMs, sent });
      // Queued as the relayed result is on the WebSocket: the next task need not wait until a slow link
      // (or the receiver's flow-control window) has taken the whole tensor. Sends to one peer stay in order.
      const to = task.sendTo.peerId;
      const bytes = out.data.byteLength;
      this.sentTensors.set(`${step}/${attempt}/${microBatch}/${direction}`, out);
      peers.send(task.sendTo, { type: 'tensor', step, attempt, microBatch, direction }, out).then(
        () => (this.status.peerBytes = (this.status.peerBytes ?? 0) + bytes),
        (err: Error) => {
          // The consumer is gone (the coordinator sees it lost) or cannot be reached from here: told, the
          // coordinator relays the two nodes' tensors. This node did its part and stays.
          if (this.stopped) return;
          this.log.warn({ to, err: err.message }, 'could not send a tensor to a peer');
          if (!channel.isClosed)
            channel.send({
              type: 'sendFailed',
              step,
              attempt,
              microBatch,
              direction,
              reason: err.message.slice(0, 500),
            });
        },
      );
    } else channel.send({ type: 'result', taskId: task.taskId, loss, busyMs, queuedMs }, out ? [out] : []);
    // One unit per task the engine ran; a micro-batch's tokens count once, on the task that brought them in.
    const { runId, shape } = this.need();
    this.emit('work', {
      runId,
      stage: range.index,
      step: task.step,
      microBatch: task.microBatch,
      tokens: task.kind === 'backward' ? 0 : shape.batch * shape.seq,
      busyMs,
    });
    await this.gate.afterWork(busyMs);
  }
}
