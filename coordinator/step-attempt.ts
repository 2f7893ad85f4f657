import type { Direction } from '../shared/protocol/codec.js';
import type { Tensor } from '../shared/protocol/frame.js';
import type { P2pAddress, TaskKind } from '../shared/protocol/messages.js';
import { boundaryLimit, boundaryProblem } from '../shared/protocol/tensor-values.js';
import type { TensorSpec } from '../shared/protocol/wire.js';
import type { MicroBatch } from './data.js';
import { pickPeer, type Peer, type SentTask } from './peer.js';
import { boundarySpec, type RunShape } from './run-config.js';
import { RecomputeCheck, type StageOutput } from './verification.js';

/** One stage's forward + backward of one micro-batch by one peer: the unit that earns a receipt. */
export interface WorkUnit {
  peer: Peer;
  stage: number;
  microBatch: number;
  /** A second replica recomputed this unit's forward and agreed (coordinator/verification.ts). */
  verified: boolean;
}

export interface AttemptResult {
  /** Loss of each micro-batch, in micro-batch order. */
  losses: number[];
  units: WorkUnit[];
  /** Sampled backwards whose recompute agreed (a unit's `verified` is its forward's). */
  backwardsVerified: number;
}

export class AttemptFailed extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'AttemptFailed';
  }
}

interface AttemptContext {
  run: RunShape;
  step: number;
  attempt: number;
  /** What the backward differentiates the loss times: mixed precision's dynamic scale, else 1. */
  lossScale: number;
  /** Live replicas of each stage, in node-id order. */
  members: Peer[][];
  microBatch(index: number): MicroBatch;
  nextTaskId(): number;
  /** Fallback per-task time for peers without a measurement yet. */
  fallbackMs: number;
  /** 'p2p': boundary tensors go between the peers; tasks say where to, results carry only summaries. */
  dataPlane: 'relay' | 'p2p';
  onRelay(bytes: number): void;
  /** Share of training forwards recomputed by a second replica, and the agreement tolerance. */
  verification: { fraction: number; tolerance: number };
  /** A check proved `peer` wrong: it must go (the attempt is failed after this). */
  onProvenWrong(peer: Peer, reason: string, part: CheckedPart): void;
  /** A check found no majority: the micro-batch is replayed with no one trusted. */
  onDispute(reason: string, part: CheckedPart): void;
  /** Asks `peer` for the tensor it sent peer to peer for `microBatch` (null when it no longer has it). */
  fetch(peer: Peer, microBatch: number, direction: Direction): Promise<Tensor | null>;
  /** Peer to peer: whether tensors between these two go through the coordinator (unreachable, disputed). */
  relays(a: Peer, b: Peer): boolean;
}

/** Which pass of a micro-batch a check recomputes. */
export type CheckedPart = 'forward' | 'backward';

/** Which pass a check's recompute task redoes: a backward, or the last stage's forward and backward. */
const partOf = (kind: TaskKind): CheckedPart =>
  kind === 'backward' || kind === 'forwardBackward' ? 'backward' : 'forward';

/** The key of a check: a stage's forward of a micro-batch, or its backward. */
const checkKey = (stage: number, mb: number, part: CheckedPart): string =>
  `${stage}/${mb}${part === 'backward' ? '/backward' : ''}`;

/** A check waiting for its answers: the task kind that recomputes it, and what that task is given. */
interface OpenCheck {
  check: RecomputeCheck;
  stage: number;
  mb: number;
  part: CheckedPart;
  kind: TaskKind;
  input: Tensor[];
}

/** Tasks kept out at a peer at least (one running, one waiting there), and at most. */
const MIN_OUTSTANDING = 2;
const MAX_OUTSTANDING = 8;

/**
 * How many tasks to keep out at `peer`: one running, and enough waiting there that the next task arrives
 * before the current one ends although each result and task crosses the link (`linkMs`) first.
 */
export function outstandingLimit(peer: Pick<Peer, 'linkMs' | 'computeMs'>): number {
  if (peer.linkMs === null || peer.computeMs === null) return MIN_OUTSTANDING;
  const cover = 1 + Math.max(1, Math.ceil(peer.linkMs / peer.computeMs));
  return Math.min(MAX_OUTSTANDING, Math.max(MIN_OUTSTANDING, cover));
}

/**
 * How many micro-batches a peer of `stage` (of `stages`) may hold between forward and backward. 1F1B needs
 * S - stage with instant links; each of the 2 (S - stage - 1) boundary crossings between a micro-batch's
 * forward here and its gradient's return adds the link's latency, during which this stage would idle, so it
 * holds enough more to cover them, and one more below the last stage: a latency that delays the first
 * gradient also shifts every later one, which the simulated schedule (S=4, M=8, 20+40 ms units, 6 ms a
 * crossing) shows as a bubble of 33.3% with one spare stash and 31.0% with two (ideal 27.3%); measured with
 * bench:pipeline in coordinator/README.md. Never more than its stash allows.
 */
export function inFlightLimit(
  peer: Pick<Peer, 'computeMs' | 'stashes'>,
  stage: number,
  stages: number,
  linkMs: number,
): number {
  const downstream = stages - stage - 1;
  const unitMs = 2 * (peer.computeMs ?? Infinity);
  const cover = downstream === 0 ? 0 : 1 + Math.ceil((2 * downstream * linkMs) / unitMs);
  return Math.min(peer.stashes, stages - stage + cover);
}

interface MicroBatchState {
  /** The peer that ran the forward at each stage; it runs the backward too. */
  path: Array<Peer | null>;
  /** Peer-to-peer: the peer chosen for each stage's forward when the stage before it was sent its task. */
  next: Array<Peer | null>;
  loss: number | null;
  /**
   * Relayed runs keep what each stage was given, so a replica can redo a lost peer's part: its forward's
   * input tensors (with the last stage's targets), the gradient of its output, whether its forward result
   * is in and whether its backward is done, and whether a replica is rebuilding its stash.
   */
  inputs: Array<Tensor[] | null>;
  gradOut: Array<Tensor | null>;
  forwarded: boolean[];
  released: boolean[];
  restashing: boolean[];
  /** The gradient of each stage's output is in (relayed: in gradOut; peer to peer: at gradSentTo). */
  gradArrived: boolean[];
  /**
   * Peer-to-peer runs: the peer each stage's input was sent to, and the peer each stage's output gradient
   * was sent to. Where that is no longer the peer holding the work (its peer left), the coordinator fetches
   * the tensor from its sender and attaches it to the task instead.
   */
  sentTo: Array<Peer | null>;
  gradSentTo: Array<Peer | null>;
  /**
   * Peer to peer: each stage's forward sampled for a recompute check, with the replicas that may recompute
   * it. Its input and its output are then relayed (the coordinator compares what it sees).
   */
  sampled: Array<{ others: Peer[]; fallback: number } | null>;
}

/**
 * The micro-batches of one attempt at a global step, moved through the pipeline: forward stage by stage
 * (routed to the replica with the least expected completion time), the last stage's loss and gradient, then
 * backward along the same peers, scheduled one-forward-one-backward so up to S micro-batches are in flight
 * (fewer where a stage's stash is smaller). Activations and gradients are relayed through the coordinator,
 * or in a peer-to-peer run sent by the producing peer straight to the consumer named in its task.
 * Resolves when every micro-batch is back at stage 0; fails as soon as a peer it depends on is lost.
 */
export class StepAttempt {
  readonly done: Promise<AttemptResult>;
  private resolve!: (r: AttemptResult) => void;
  private reject!: (e: Error) => void;
  private readonly states: MicroBatchState[];
  private readonly units: WorkUnit[] = [];
  private readonly routed = new Set<Peer>();
  private remaining: number;
  private settled = false;
  /** Open checks by `checkKey`: which pass of which micro-batch, and what its recompute is given. */
  private readonly checks = new Map<string, OpenCheck>();
  /** Each sampled forward's recomputing replica, by `stage/mb`: its backward is checked by the same one. */
  private readonly checkedBy = new Map<string, Peer>();
  /** Forwards whose check agreed, by `checkKey`; and how many backwards' checks agreed. */
  private readonly verified = new Set<string>();
  private backwardsVerified = 0;
  private openChecks = 0;
  /** Redone tasks of a rerouted peer's work not yet answered (a restash's backward counts anew). */
  private redos = 0;

  /**
   * `evaluate` runs the micro-batches forward only (held-out validation): each stage's forward is a unit of
   * its own, and the last stage returns the loss without a gradient.
   */
  constructor(
    private readonly ctx: AttemptContext,
    microBatches: number,
    private readonly mode: 'train' | 'evaluate' = 'train',
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.done.catch(() => {});
    this.states = Array.from({ length: microBatches }, () => ({
      path: ctx.members.map(() => null),
      next: ctx.members.map(() => null),
      loss: null,
      inputs: ctx.members.map(() => null),
      gradOut: ctx.members.map(() => null),
      forwarded: ctx.members.map(() => false),
      released: ctx.members.map(() => false),
      restashing: ctx.members.map(() => false),
      gradArrived: ctx.members.map(() => false),
      sentTo: ctx.members.map(() => null),
      gradSentTo: ctx.members.map(() => null),
      sampled: ctx.members.map(() => null),
    }));
    this.remaining = microBatches;
  }

  start(): void {
    for (let mb = 0; mb < this.states.length; mb++) this.routeForward(0, mb, null);
  }

  /** The peer `producer` was told to send micro-batch `mb`'s tensor to in `direction`, if any. */
  consumerOf(producer: Peer, mb: number, direction: Direction): Peer | null {
    const state = this.states[mb];
    const stage = producer.stage;
    if (!state || stage === null || state.path[stage] !== producer) return null;
    return (direction === 'forward' ? state.sentTo[stage + 1] : state.gradSentTo[stage - 1]) ?? null;
  }

  /** The peer that sent the input of `task` (run by a peer of `stage`) peer to peer, if any. */
  producerOf(stage: number, task: SentTask): Peer | null {
    if (!task.takesFromPeer) return null;
    const path = this.states[task.microBatch]?.path;
    return (task.kind === 'backward' ? path?.[stage + 1] : path?.[stage - 1]) ?? null;
  }

  /** True when losing `peer` loses work of this attempt (its activations, gradients or queued tasks). */
  involves(peer: Peer): boolean {
    return (
      peer.queued > 0 ||
      peer.busy ||
      peer.resident.size > 0 ||
      this.units.some((u) => u.peer === peer) ||
      this.states.some((s) => s.path.includes(peer) || s.next.includes(peer))
    );
  }

  fail(reason: string): void {
    if (this.settled) return;
    this.settled = true;
    this.reject(new AttemptFailed(reason));
  }

  get isSettled(): boolean {
    return this.settled;
  }

  /** Micro-batches whose backward pass has reached the first stage. */
  get completedMicroBatches(): number {
    return this.states.length - this.remaining;
  }

  /** Handles a task result that belongs to this attempt. */
  onResult(peer: Peer, task: SentTask, loss: number | undefined, tensors: Tensor[]): void {
    if (this.settled) return;
    const stage = peer.stage!;
    const mb = task.microBatch;
    const state = this.states[mb]!;
    peer.outstanding--;
    if (task.verifyOnly) {
      this.checkAnswer(peer, checkKey(stage, mb, partOf(task.kind)), loss, tensors);
      this.dispatch(peer);
      return;
    }
    if (task.kind !== 'backward') this.checkAnswer(peer, checkKey(stage, mb, 'forward'), loss, tensors);
    if (task.kind === 'backward' || task.kind === 'forwardBackward')
      this.checkAnswer(peer, checkKey(stage, mb, 'backward'), undefined, tensors);
    if (this.settled) return;
    if (task.redo) return this.onRedone(peer, task, stage);
    if (task.kind === 'forward') {
      state.forwarded[stage] = true;
      if (this.mode === 'evaluate') this.release(peer, stage, mb);
      if (tensors[0]) this.ctx.onRelay(tensors[0].data.byteLength);
      this.routeForward(stage + 1, mb, tensors[0] ?? null);
      this.dispatch(peer);
      return;
    }
    if (task.kind === 'forwardBackward' || task.kind === 'evaluate') {
      if (loss === undefined || !Number.isFinite(loss)) {
        this.fail(`stage ${stage + 1} returned no finite loss for micro-batch ${mb}`);
        return;
      }
      state.loss = loss;
      state.forwarded[stage] = true;
    }
    this.release(peer, stage, mb);
    if (stage === 0 || task.kind === 'evaluate') {
      this.remaining--;
      this.finishWhenDone();
    } else {
      const gradient = tensors[0];
      if (gradient) this.ctx.onRelay(gradient.data.byteLength);
      this.queueBackward(stage - 1, mb, gradient ?? null, false);
    }
    this.dispatch(peer);
  }

  /**
   * Queues the backward of `mb` on `stage` at the peer holding its stash, with the gradient of the stage's
   * output (null where it comes peer to peer). `redo`: the lost peer had done it, so its output gradient
   * already went on and only the gradient it accumulates counts. Waits while a replica rebuilds the stash.
   */
  private queueBackward(stage: number, mb: number, gradient: Tensor | null, redo: boolean): void {
    const state = this.states[mb]!;
    state.gradArrived[stage] = true;
    if (this.ctx.dataPlane === 'relay') state.gradOut[stage] = gradient;
    if (state.restashing[stage]) return;
    const peer = state.path[stage]!;
    const producer = state.path[stage + 1]!;
    if (!gradient && state.gradSentTo[stage] !== peer)
      return this.refetch(producer, mb, 'backward', (t) => this.queueBackward(stage, mb, t, redo));
    peer.backwards.push(() => {
      const sendTo = stage > 0 && !redo ? this.gradientTo(peer, stage, mb) : undefined;
      if (sendTo) state.gradSentTo[stage - 1] = state.path[stage - 1]!;
      // The replica that recomputed this forward recomputes its backward too, from the same gradient.
      const duplicate = this.checkedBy.get(checkKey(stage, mb, 'forward'));
      if (duplicate && gradient && stage > 0 && !redo)
        this.openCheck(peer, duplicate, stage, mb, 'backward', [...state.inputs[stage]!, gradient]);
      this.send(
        peer,
        'backward',
        mb,
        gradient ? [gradient] : [],
        this.activationSpec(stage, 'backward', !sendTo),
        false,
        { inputFrom: gradient ? undefined : producer.p2p?.peerId, sendTo },
        redo,
      );
    });
    this.dispatch(peer);
  }

  /**
   * Fetches from `from` the tensor it sent peer to peer for `mb` to a peer that has since left, then goes on
   * with it attached (relayed) to the replica's task. The attempt fails where the sender left too or no
   * longer holds it.
   */
  private refetch(from: Peer, mb: number, direction: Direction, then: (tensor: Tensor) => void): void {
    const what = direction === 'forward' ? 'activations' : 'activation gradient';
    this.ctx.fetch(from, mb, direction).then(
      (tensor) => {
        if (this.settled) return;
        if (!tensor) return this.fail(`node ${from.shortId} no longer holds micro-batch ${mb}'s ${what}`);
        const limit = boundaryLimit(direction, this.ctx.lossScale);
        const problem = boundaryProblem(this.ctx.run, tensor, direction, limit);
        if (problem) return this.fail(`node ${from.shortId} ${problem}`);
        this.ctx.onRelay(tensor.data.byteLength);
        then(tensor);
      },
      (err: Error) => this.fail(`could not fetch micro-batch ${mb}'s ${what}: ${err.message}`),
    );
  }

  /**
   * Training runs: `lost` left mid-attempt, and another replica of its stage redoes its part of
   * each micro-batch instead of the whole step being replayed. A forward it had not finished is routed
   * again; one whose output already went on is recomputed only to rebuild the stash; a backward it had done
   * is redone for the gradient it accumulated (its output already went on). Its units are dropped: its
   * gradient left with it. Peer to peer, tensors it was sent are fetched from their senders. Returns false
   * where that cannot be done (validation, a stage with no other live replica, an open check on its stage,
   * a tensor of it that a neighbour may still be waiting for): replay instead.
   */
  reroute(lost: Peer): boolean {
    if (this.settled) return true;
    const stage = lost.stage;
    if (stage === null || this.mode !== 'train') return false;
    if ([...this.checks.keys()].some((key) => key.startsWith(`${stage}/`))) return false;
    if (!this.ctx.members[stage]!.some((p) => p !== lost && !p.channel.isClosed)) return false;
    const relayed = this.ctx.dataPlane === 'relay';
    if (!relayed && this.states.some((state) => this.awaitsTensorFrom(lost, stage, state))) return false;
    const last = stage === this.ctx.members.length - 1;
    for (let i = this.units.length - 1; i >= 0; i--)
      if (this.units[i]!.peer === lost) this.units.splice(i, 1);
    // Its forwards' checks are over (none is open on its stage); their backwards go unchecked.
    for (const [key, duplicate] of this.checkedBy) if (duplicate === lost) this.checkedBy.delete(key);
    lost.clearWork();
    for (const [mb, state] of this.states.entries()) {
      // Peer to peer, its producer may be sending it this micro-batch now: the replica picked when the
      // producer's result comes fetches the tensor instead (routeForward).
      if (state.next[stage] === lost) state.next[stage] = null;
      if (state.path[stage] !== lost) continue;
      if (!state.forwarded[stage]) {
        state.path[stage] = null;
        const input = stage === 0 || !relayed ? null : state.inputs[stage]![0]!;
        if (input) this.ctx.onRelay(input.data.byteLength);
        this.routeForward(stage, mb, input);
        continue;
      }
      const peer = this.pick(stage)!.peer;
      state.path[stage] = peer;
      if (last) {
        // The loss and the output gradient are in already; the replica redoes it for the gradient alone.
        this.sendRedo(peer, stage, mb, 'forwardBackward');
        continue;
      }
      // The replica rebuilds the stash; the backward follows it (onRedone) or comes when its gradient does.
      state.restashing[stage] = true;
      this.sendRedo(peer, stage, mb, 'forward');
    }
    return true;
  }

  /**
   * Peer to peer: whether a neighbour has been told to take this micro-batch's tensor from `lost` (at
   * `stage`) and may not have it yet. A tensor follows its result, so it may have died with its sender, and
   * nothing would tell the neighbour: such an attempt is replayed rather than rerouted.
   */
  private awaitsTensorFrom(lost: Peer, stage: number, state: MicroBatchState): boolean {
    if (state.path[stage] !== lost) return false;
    const forwardOut =
      state.forwarded[stage] === true && state.path[stage + 1] != null && !state.forwarded[stage + 1];
    const gradientOut =
      stage > 0 &&
      state.released[stage] === true &&
      state.gradArrived[stage - 1] === true &&
      !state.released[stage - 1];
    return forwardOut || gradientOut;
  }

  /** Queues a redo of a lost peer's task at `peer`: its input as kept (or fetched), its outputs dropped. */
  private sendRedo(peer: Peer, stage: number, mb: number, kind: 'forward' | 'forwardBackward'): void {
    this.redos++;
    const state = this.states[mb]!;
    const kept = state.inputs[stage]!;
    if (this.ctx.dataPlane === 'p2p' && stage > 0)
      return this.refetch(state.path[stage - 1]!, mb, 'forward', (input) =>
        this.pushRedo(peer, stage, mb, kind, [input, ...kept]),
      );
    this.pushRedo(peer, stage, mb, kind, kept);
  }

  private pushRedo(
    peer: Peer,
    stage: number,
    mb: number,
    kind: 'forward' | 'forwardBackward',
    input: Tensor[],
  ): void {
    peer.forwards.push(() => {
      if (kind === 'forward') peer.resident.add(mb);
      this.send(peer, kind, mb, input, this.activationSpec(stage, kind, true), false, {}, true);
    });
    this.dispatch(peer);
  }

  /** A redo is back: a rebuilt stash takes its backward (redone where the lost peer had done it). */
  private onRedone(peer: Peer, task: SentTask, stage: number): void {
    const mb = task.microBatch;
    const state = this.states[mb]!;
    if (task.kind === 'forward') {
      state.restashing[stage] = false;
      const redoBackward = state.released[stage]!;
      // The lost peer's backward is redone too: counted until it is in.
      if (redoBackward) this.redos++;
      if (state.gradArrived[stage]) this.queueBackward(stage, mb, state.gradOut[stage] ?? null, redoBackward);
    } else this.release(peer, stage, mb);
    this.redos--;
    this.dispatch(peer);
    this.finishWhenDone();
  }

  /**
   * The attempt is done when every micro-batch is back at stage 0, every check has its verdict and every
   * redo is in: a redone gradient missing from its replica's sum would be lost from the step, and a task
   * left running would carry over into the next attempt.
   */
  private finishWhenDone(): void {
    if (this.settled || this.remaining > 0 || this.openChecks > 0 || this.redos > 0) return;
    this.settled = true;
    for (const unit of this.units)
      unit.verified = this.verified.has(checkKey(unit.stage, unit.microBatch, 'forward'));
    this.resolve({
      losses: this.states.map((s) => s.loss!),
      units: this.units,
      backwardsVerified: this.backwardsVerified,
    });
  }

  /**
   * Starts a check of micro-batch `mb` on `stage`: `duplicate` recomputes the primary's forward, or its
   * backward (`backward`, or `forwardBackward` on the last stage) with nothing added to its own gradients.
   */
  private openCheck(
    primary: Peer,
    duplicate: Peer,
    stage: number,
    mb: number,
    kind: TaskKind,
    input: Tensor[],
  ): void {
    const check = new RecomputeCheck(this.ctx.run, this.ctx.verification.tolerance, primary, duplicate);
    const part = partOf(kind);
    const entry = { check, stage, mb, part, kind, input };
    this.checks.set(checkKey(stage, mb, part), entry);
    this.openChecks++;
    this.sendRecompute(duplicate, entry);
  }

  /**
   * Queues a check's recompute at `peer`: compared, never forwarded or stashed. It runs in the working set,
   * so it waits with the forwards for the peer's stash room.
   */
  private sendRecompute(peer: Peer, { stage, mb, kind, input }: OpenCheck): void {
    // A node that left after its answer is no longer part of the attempt: nothing else would notice.
    if (peer.channel.isClosed) return this.fail(`node ${peer.shortId} left before its recompute`);
    peer.forwards.push(() => this.send(peer, kind, mb, input, this.activationSpec(stage, kind, true), true));
    this.dispatch(peer);
  }

  /** Feeds an output to the check it answers (`key`), if one is open, and acts on the verdict. */
  private checkAnswer(peer: Peer, key: string, loss: number | undefined, tensors: Tensor[]): void {
    const entry = this.checks.get(key);
    if (!entry) return;
    const { stage, mb, part } = entry;
    const output: StageOutput =
      part === 'backward'
        ? { kind: 'gradient', tensor: tensors[0]! }
        : loss !== undefined
          ? { kind: 'loss', loss }
          : { kind: 'activations', tensor: tensors[0]! };
    const live = this.ctx.members[stage]!.filter((p) => !p.channel.isClosed);
    const verdict = entry.check.answer(peer, output, live);
    if (!verdict) return;
    if ('need' in verdict) {
      if (verdict.need === 'referee') return this.sendRecompute(verdict.peer, entry);
      this.sendRecompute(entry.check.primary, entry);
      return this.sendRecompute(entry.check.duplicate, entry);
    }
    this.checks.delete(key);
    this.openChecks--;
    const what = part === 'backward' ? 'the backward of ' : '';
    const where = `${what}micro-batch ${mb} of step ${this.ctx.step + 1} on stage ${stage + 1}`;
    if (verdict.kind === 'agreed') {
      if (part === 'forward') this.verified.add(key);
      else this.backwardsVerified++;
      return this.finishWhenDone();
    }
    if (verdict.kind === 'wrong') {
      const how =
        verdict.by === 'referee' ? 'a third replica sided with the other' : 'its own recompute disagreed';
      const reason = `node ${verdict.peer.shortId} was outvoted on ${where}: ${how} (relative difference ${verdict.difference.toExponential(2)})`;
      this.ctx.onProvenWrong(verdict.peer, reason, part);
      return this.fail(reason);
    }
    const reason = `replicas disagree on ${where} and no majority settles it`;
    this.ctx.onDispute(reason, part);
    this.fail(reason);
  }

  private release(peer: Peer, stage: number, mb: number): void {
    this.states[mb]!.released[stage] = true;
    this.units.push({ peer, stage, microBatch: mb, verified: false });
    peer.finishUnit();
    peer.resident.delete(mb);
  }

  /**
   * One-forward-one-backward: a peer gets a waiting backward first; else a forward, while it holds fewer
   * micro-batches than its stash allows and than 1F1B needs at its depth (inFlightLimit: S - stage plus
   * what covers the links). So the stages fill, then alternate, then drain. Several tasks may be out at
   * once, so the next one is already at the peer when the current one ends (outstandingLimit); the node
   * runs a backward before forwards that wait with it.
   */
  private dispatch(peer: Peer): void {
    const S = this.ctx.members.length;
    const limit = inFlightLimit(peer, peer.stage!, S, this.linkMs());
    while (!this.settled && peer.outstanding < outstandingLimit(peer)) {
      const backward = peer.backwards.shift();
      if (backward) {
        backward();
        continue;
      }
      if (peer.resident.size >= limit) return;
      const forward = peer.forwards.shift();
      if (!forward) return;
      forward();
    }
  }

  /** The link's latency between stages: the mean over the attempt's measured peers (relay: two legs a hop). */
  private linkMs(): number {
    const measured = this.ctx.members.flat().flatMap((p) => (p.linkMs === null ? [] : [p.linkMs]));
    return measured.length === 0 ? 0 : measured.reduce((a, b) => a + b, 0) / measured.length;
  }

  /**
   * Sends micro-batch `mb` into `stage`, with the previous stage's activations (null at stage 0, and where
   * they go peer to peer).
   */
  private routeForward(stage: number, mb: number, activations: Tensor | null): void {
    const S = this.ctx.members.length;
    const state = this.states[mb]!;
    const chosen = state.next[stage];
    const picked = chosen ? null : this.pick(stage);
    const peer = chosen ?? picked?.peer;
    if (!peer) return;
    if (this.ctx.dataPlane === 'p2p' && stage > 0 && !activations && state.sentTo[stage] !== peer) {
      // Its input went to a peer that has left: fetched from the producer and attached.
      state.next[stage] = peer;
      return this.refetch(state.path[stage - 1]!, mb, 'forward', (t) => this.routeForward(stage, mb, t));
    }
    const last = stage === S - 1;
    const batch = this.ctx.microBatch(mb);
    const { batch: B, seq: T } = this.ctx.run.shape;
    const input: Tensor | null =
      stage === 0 ? { dtype: 'i32', shape: [B, T], data: batch.tokens } : activations;
    const targets: Tensor[] = last ? [{ dtype: 'i32', shape: [B, T], data: batch.targets }] : [];
    const tensors = input ? [input, ...targets] : targets;
    state.path[stage] = peer;
    state.inputs[stage] = tensors;
    const p2p = this.ctx.dataPlane === 'p2p';
    // Peer to peer, a check needs the stage's input and output where the coordinator sees them: relayed.
    if (p2p && stage === 0 && picked && this.sample(picked)) state.sampled[0] = picked;
    const sampled = p2p ? state.sampled[stage] : picked && this.sample(picked) ? picked : null;
    // Known before the task goes: where its gradient goes depends on it (gradientTo).
    const duplicate = sampled ? pickPeer(sampled.others, Date.now(), sampled.fallback)! : null;
    // Routed again (its peer left first), a micro-batch's check is decided anew.
    if (duplicate) this.checkedBy.set(checkKey(stage, mb, 'forward'), duplicate);
    else this.checkedBy.delete(checkKey(stage, mb, 'forward'));
    peer.forwards.push(() => {
      if (!last) peer.resident.add(mb);
      const kind: TaskKind = !last ? 'forward' : this.mode === 'evaluate' ? 'evaluate' : 'forwardBackward';
      let sendTo: P2pAddress | undefined;
      if (p2p && !last) {
        const next = this.pick(stage + 1);
        if (!next) return;
        state.next[stage + 1] = next.peer;
        if (this.sample(next)) state.sampled[stage + 1] = next;
        if (!state.sampled[stage] && !state.sampled[stage + 1]) {
          sendTo = this.p2pAddress(peer, next.peer);
          if (sendTo) state.sentTo[stage + 1] = next.peer;
        }
      } else if (kind === 'forwardBackward' && stage > 0) {
        sendTo = this.gradientTo(peer, stage, mb);
        if (sendTo) state.gradSentTo[stage - 1] = state.path[stage - 1]!;
      }
      this.send(peer, kind, mb, tensors, this.activationSpec(stage, kind, !sendTo), false, {
        inputFrom: input ? undefined : state.path[stage - 1]!.p2p?.peerId,
        sendTo,
      });
    });
    this.dispatch(peer);
    if (!duplicate) return;
    if (activations) this.ctx.onRelay(activations.data.byteLength);
    this.openCheck(peer, duplicate, stage, mb, last ? 'evaluate' : 'forward', tensors);
    // The last stage's backward starts from the loss: recomputed with it, from the same input and targets.
    if (last && stage > 0 && this.mode === 'train')
      this.openCheck(peer, duplicate, stage, mb, 'forwardBackward', tensors);
  }

  /**
   * Where the peer running `mb`'s backward on `stage` sends the gradient of its input: peer to peer, unless
   * this stage's backward or the previous stage's is checked (the coordinator then needs to see it; stage
   * 1's backward has no input gradient to check).
   */
  private gradientTo(peer: Peer, stage: number, mb: number): P2pAddress | undefined {
    const checked = (s: number): boolean => s > 0 && this.checkedBy.has(checkKey(s, mb, 'forward'));
    if (checked(stage) || checked(stage - 1)) return undefined;
    return this.p2pAddress(peer, this.states[mb]!.path[stage - 1]!);
  }

  /** Whether to check this forward: training, a second live replica to recompute it, and the sampled share. */
  private sample(picked: { others: Peer[] }): boolean {
    return (
      this.mode === 'train' && picked.others.length > 0 && Math.random() < this.ctx.verification.fraction
    );
  }

  /** Where `from` sends `to`'s input in a peer-to-peer run (undefined when their tensors are relayed). */
  private p2pAddress(from: Peer, to: Peer): P2pAddress | undefined {
    if (this.ctx.dataPlane !== 'p2p' || this.ctx.relays(from, to)) return undefined;
    return to.p2p ?? undefined;
  }

  /** The replica of `stage` that takes the next micro-batch; fails the attempt when none is live. */
  private pick(stage: number): { peer: Peer; others: Peer[]; fallback: number } | null {
    const candidates = this.ctx.members[stage]!.filter((p) => !p.channel.isClosed);
    // An unmeasured peer is assumed as fast as its stage's average. Each replica gets one micro-batch per
    // step before routing goes by expected completion, so a peer whose estimate is stale (a slow first task,
    // a busy moment) is measured again instead of starving.
    const measured = candidates.map((p) => p.emaMs).filter((ms): ms is number => ms !== null);
    const fallback =
      measured.length > 0 ? measured.reduce((a, b) => a + b, 0) / measured.length : this.ctx.fallbackMs;
    const unprobed = candidates.filter((p) => !p.busy && !this.routed.has(p));
    const peer = pickPeer(unprobed.length > 0 ? unprobed : candidates, Date.now(), fallback);
    if (!peer) {
      this.fail(`no live node on stage ${stage + 1}`);
      return null;
    }
    this.routed.add(peer);
    return { peer, others: candidates.filter((p) => p !== peer), fallback };
  }

  /** What the result of a task on `stage` carries: activations out, gradients in, or nothing. */
  private activationSpec(
    stage: number,
    kind: TaskKind,
    relayed = this.ctx.dataPlane === 'relay',
  ): TensorSpec[] {
    const S = this.ctx.members.length;
    const hasTensor = kind === 'forward' ? stage < S - 1 : kind !== 'evaluate' && stage > 0;
    return hasTensor && relayed
      ? [boundarySpec(this.ctx.run, kind === 'forward' ? 'forward' : 'backward')]
      : [];
  }

  private send(
    peer: Peer,
    kind: TaskKind,
    mb: number,
    tensors: Tensor[],
    result: TensorSpec[],
    verifyOnly = false,
    p2p: { inputFrom?: string; sendTo?: P2pAddress } = {},
    redo = false,
  ): void {
    const taskId = this.ctx.nextTaskId();
    peer.outstanding++;
    const lossScale = this.ctx.lossScale / this.states.length;
    peer.tasks.set(taskId, {
      taskId,
      kind,
      step: this.ctx.step,
      attempt: this.ctx.attempt,
      microBatch: mb,
      sentAt: Date.now(),
      result,
      ...(verifyOnly ? { verifyOnly: true as const } : {}),
      ...(p2p.sendTo ? { sendsToPeer: true as const } : {}),
      ...(p2p.inputFrom ? { takesFromPeer: true as const } : {}),
      ...(redo ? { redo: true as const } : {}),
    });
    peer.send(
      {
        type: 'task',
        taskId,
        kind,
        step: this.ctx.step,
        attempt: this.ctx.attempt,
        microBatch: mb,
        lossScale,
        ...(verifyOnly ? { verifyOnly: true as const } : {}),
        ...p2p,
      },
      tensors,
    );
  }
}
