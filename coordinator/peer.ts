import type { Channel, SocketLike } from '../shared/protocol/channel.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type {
  CoordinatorMessage,
  NodeMessage,
  Outgoing,
  P2pAddress,
  TaskKind,
} from '../shared/protocol/messages.js';
import type { EncodedMessage, Received, TensorSpec } from '../shared/protocol/wire.js';

export interface SentTask {
  taskId: number;
  kind: TaskKind;
  step: number;
  attempt: number;
  microBatch: number;
  sentAt: number;
  /** What the result must carry. */
  result: TensorSpec[];
  /** A recompute for verification: its output is compared, never forwarded. */
  verifyOnly?: true;
  /** Its output goes to another peer (peer-to-peer run): the result must summarise it. */
  sendsToPeer?: true;
  /** Its input comes from another peer (peer-to-peer run), not with the task: only then may it report it bad. */
  takesFromPeer?: true;
  /** Redoes a lost peer's part of a micro-batch (step-attempt.ts reroute): its outputs already went on. */
  redo?: true;
}

/** A reply the coordinator waits for besides task results; `attempt`/`step`/`requestId` must match. */
export interface Awaiting {
  kind: 'grads' | 'applied' | 'state' | 'loaded';
  key: number;
  spec: TensorSpec[];
  since: number;
  resolve(received: Received<NodeMessage>): void;
  reject(error: Error): void;
}

/** What a TCP socket offers to hold writes back and let them out together. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

/** A tensor asked back from the peer that sent it peer to peer; `held` false when it no longer has it. */
export interface Fetch {
  spec: TensorSpec;
  since: number;
  resolve(tensor: Tensor | null): void;
  reject(error: Error): void;
}

/** Smoothing of the per-task time estimate (SWARM's throughput EMA). */
const EMA_WEIGHT = 0.3;

function smooth(previous: number | null, sample: number): number {
  return previous === null ? sample : EMA_WEIGHT * sample + (1 - EMA_WEIGHT) * previous;
}

/** One connected node as the coordinator sees it. */
export class Peer {
  nodeId = '';
  engine = '';
  authenticated = false;
  nonce = '';
  /** The remote address, for the per-address cap on unauthenticated connections. */
  address = '';
  receiptCursor = 0;
  statementCursor = 0;
  /** Where its libp2p host listens, in a peer-to-peer run. */
  p2p: P2pAddress | null = null;
  /** The node asked for work. */
  wantsWork = false;
  /** Stage whose weights the node holds and trains, or null while unassigned. */
  stage: number | null = null;
  /** Milliseconds per task, smoothed; null until the first task. Drives routing. */
  emaMs: number | null = null;
  /** Busy milliseconds per work unit (a micro-batch's forward and backward here), smoothed. Drives placement. */
  unitEmaMs: number | null = null;
  private unitBusyMs = 0;
  private tasksSeen = 0;
  /**
   * A task's round trip on the coordinator's clock less the time the node says it queued and computed (the
   * link: latency both ways, the tensors' transfer, the coordinator's own handling), and the node's compute
   * per task; both smoothed, null until measured. They size how much work is kept out to hide the link
   * (step-attempt.ts): a node that lies about them only changes how many of its own tasks wait at it.
   */
  linkMs: number | null = null;
  computeMs: number | null = null;
  /** Tasks sent and not yet answered, including ones from an aborted attempt. */
  readonly tasks = new Map<number, SentTask>();
  /** Micro-batches the stage can hold between forward and backward (reported with `loaded`). */
  stashes = 1;
  /** Micro-batches whose activations this peer holds (between their forward and their backward). */
  readonly resident = new Set<number>();
  /** Tasks of the current attempt sent and not yet answered (the coordinator keeps at most two out). */
  outstanding = 0;
  /** Forwards routed to this peer, waiting for it to be free and to have a stash slot. */
  readonly forwards: Array<() => void> = [];
  /** Backwards of micro-batches it holds, waiting for it to be free; they go before forwards. */
  readonly backwards: Array<() => void> = [];
  awaiting: Awaiting | null = null;
  /** Tensors asked back with `fetch` (step-attempt.ts reroute), by `attempt/microBatch/direction`. */
  readonly fetches = new Map<string, Fetch>();
  readonly connectedAt = Date.now();

  constructor(
    readonly connectionId: number,
    readonly channel: Channel<NodeMessage, CoordinatorMessage>,
    /** The channel's socket, for messages encoded once for many peers (they bypass the channel's numbering). */
    private readonly socket: SocketLike,
    /** The TCP socket under it: a message's text and tensor frames leave in one write, not one each. */
    private readonly tcp: Corkable,
  ) {}

  observeTaskTime(ms: number): void {
    this.unitBusyMs += ms;
    // The first task compiles the engine's kernels; it says nothing about the peer's speed.
    if (this.tasksSeen++ === 0) return;
    this.emaMs = smooth(this.emaMs, ms);
  }

  observeLink(roundTripMs: number, queuedMs: number, busyMs: number): void {
    this.linkMs = smooth(this.linkMs, Math.max(roundTripMs - queuedMs - busyMs, 0));
    this.computeMs = smooth(this.computeMs, Math.max(busyMs, 0.1));
  }

  /** Called when the unit the peer held is finished: its tasks' busy time becomes one sample. */
  finishUnit(): void {
    this.unitEmaMs = smooth(this.unitEmaMs, this.unitBusyMs);
    this.unitBusyMs = 0;
  }

  get busy(): boolean {
    return this.outstanding > 0;
  }

  get queued(): number {
    return this.forwards.length + this.backwards.length;
  }

  /** Forgets the work of an abandoned attempt. */
  clearWork(): void {
    this.resident.clear();
    this.outstanding = 0;
    this.forwards.length = 0;
    this.backwards.length = 0;
  }

  /** Expected ms until a new task given now would finish: what is running, what is queued, then the task. */
  expectedCompletionMs(now: number, fallbackMs: number): number {
    const per = this.emaMs ?? fallbackMs;
    let running = 0;
    if (this.busy) {
      const oldest = Math.min(...[...this.tasks.values()].map((t) => t.sentAt), now);
      running = Math.max(per - (now - oldest), per * 0.1);
    }
    return running + per * (this.queued + 1);
  }

  send(message: Outgoing<CoordinatorMessage>, tensors?: Tensor[]): void {
    this.tcp.cork();
    try {
      this.channel.send(message, tensors);
    } finally {
      this.tcp.uncork();
    }
  }

  /** Sends a message from `encodeShared`: the same bytes that its other receivers get. */
  sendEncoded(encoded: EncodedMessage): void {
    if (this.channel.isClosed) return;
    this.tcp.cork();
    for (const part of encoded) this.socket.send(part);
    this.tcp.uncork();
  }

  get shortId(): string {
    return this.nodeId.slice(0, 8) || `conn${this.connectionId}`;
  }
}

/**
 * SWARM's stochastic wiring, made deterministic: the peer with the least expected completion time, ties to
 * the lower node id so that a run replays the same way.
 */
export function pickPeer(peers: readonly Peer[], now: number, fallbackMs: number): Peer | null {
  let best: Peer | null = null;
  let bestCost = Infinity;
  for (const peer of peers) {
    const cost = peer.expectedCompletionMs(now, fallbackMs);
    if (cost < bestCost || (cost === bestCost && best !== null && peer.nodeId < best.nodeId)) {
      best = peer;
      bestCost = cost;
    }
  }
  return best;
}
