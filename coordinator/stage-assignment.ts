import type { Logger } from 'pino';
import { seedState, type FlatState } from '../gpu/model/flat-state.js';
import { stageParamCount } from '../gpu/model/params.js';
import { stateFromTensors, stateSpec, stateTensors } from '../shared/protocol/stage-state.js';
import { stageLabel } from '../shared/stage-label.js';
import { loadCheckpoint } from './checkpoints.js';
import type { Peer } from './peer.js';
import { rebalanceMove, stageForJoiner, type PlacedPeer } from './placement.js';
import type { RunConfig, RunShape } from './run-config.js';
import type { Sessions } from './sessions.js';
import type { CoordinatorStore } from './store.js';
import { stateProblem } from './value-checks.js';

export interface StageAssignmentOptions {
  config: RunConfig;
  run: RunShape;
  /** One micro-batch's forward + backward FLOPs on each stage. */
  stageFlops: number[];
  sessions: Sessions;
  store: CoordinatorStore;
  log: Logger;
  /** The step whose weights a newly placed replica must hold. */
  step(): number;
  /** A replica was placed or moved. */
  onPlaced(): void;
}

/**
 * How long placement waits for joiners to report their stage loaded. Loading can take minutes (an engine
 * starts, kernels compile), so a joiner that is not done by then finishes in the background and joins at the
 * next placement: a node that never reports loaded cannot hold the run, however many fresh keys it uses.
 */
const JOIN_WAIT_MS = 2_000;

/**
 * The control plane's stage assignment, between steps: joiners go where the pipeline is slowest, replicas
 * move when that clearly raises the bottleneck, and a placed node loads the stage's weights and moments from
 * a live replica, the checkpoint of this very step, or the seed.
 */
export class StageAssignment {
  private readonly stateCache = new Map<number, FlatState>();
  private requestIds = 0;
  /** Joiners loading a stage; they count toward its capacity for placing others. */
  private readonly loading = new Map<Peer, number>();
  /** Joiners that finished loading after placement moved on: what they hold, for the next placement. */
  private readonly loadedLate = new Map<Peer, { stage: number; step: number; stashes: number }>();
  private placing = false;

  constructor(private readonly options: StageAssignmentOptions) {}

  /** Places joiners and moves replicas; returns the stages still without a replica. */
  async place(): Promise<number[]> {
    this.placing = true;
    try {
      await this.admitJoiners();
      await this.rebalance();
    } finally {
      this.placing = false;
    }
    const { run, sessions } = this.options;
    return run.ranges.filter((r) => sessions.membersOf(r.index).length === 0).map((r) => r.index);
  }

  /** The cached stage states belong to the step that just ended (or was rolled back). */
  forgetStates(): void {
    this.stateCache.clear();
  }

  /** Whether the weights of `stage` at the current step exist somewhere: a replica, a checkpoint, or the seed. */
  weightsAvailable(stage: number): boolean {
    const step = this.options.step();
    return (
      this.options.sessions.membersOf(stage).length > 0 ||
      step === 0 ||
      this.options.store.latestCheckpoint()?.step === step
    );
  }

  /** Stages whose current weights exist nowhere any more. */
  lostStages(): number[] {
    return this.options.run.ranges.filter((r) => !this.weightsAvailable(r.index)).map((r) => r.index);
  }

  /** After a rollback every replica reloads: nobody holds the checkpoint's weights yet. */
  unplaceAll(): void {
    this.stateCache.clear();
    for (const peer of this.options.sessions.peers) peer.stage = null;
  }

  /** Verification recomputes on a second replica: with it on, every stage gets two before any gets a third. */
  private get minReplicas(): number {
    return this.options.config.verification.fraction > 0 ? 2 : 1;
  }

  /** Placement's view of the replicas: FLOPs per second each sustains on its stage. */
  private placed(): PlacedPeer[] {
    const placed: PlacedPeer[] = [...this.options.sessions.peers]
      .filter((p) => p.stage !== null)
      .map((p) => ({
        id: p.nodeId,
        stage: p.stage!,
        flopsPerSecond:
          p.unitEmaMs === null ? null : (this.options.stageFlops[p.stage!]! * 1000) / p.unitEmaMs,
      }));
    for (const [peer, stage] of this.loading) placed.push({ id: peer.nodeId, stage, flopsPerSecond: null });
    return placed;
  }

  /**
   * Sends joiners their stage's weights and waits for their "loaded" at most JOIN_WAIT_MS; the weights are
   * fetched first, so no request to a replica is left open when a step starts.
   */
  private async admitJoiners(): Promise<void> {
    const { sessions, stageFlops, log } = this.options;
    const step = this.options.step();
    for (const [peer, held] of this.loadedLate) {
      this.loadedLate.delete(peer);
      if (sessions.peers.has(peer) && peer.stage === null && held.step === step)
        this.placeAt(peer, held.stage, held.stashes);
    }
    const joiners = [...sessions.peers]
      .filter((p) => p.authenticated && p.wantsWork && p.stage === null && !this.loading.has(p))
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
    const loads: Promise<void>[] = [];
    for (const peer of joiners) {
      const stage = stageForJoiner(this.placed(), stageFlops, this.minReplicas);
      let state: FlatState;
      try {
        state = await this.stageState(stage);
      } catch (err) {
        log.warn({ node: peer.shortId, err: (err as Error).message }, 'could not place node');
        continue;
      }
      if (!sessions.peers.has(peer)) continue;
      this.loading.set(peer, stage);
      loads.push(
        this.sendStage(peer, stage, step, state)
          .then((stashes) => {
            // Weights of another step, or a step already running without it: it joins at the next placement.
            if (this.placing && this.options.step() === step) this.placeAt(peer, stage, stashes);
            else this.loadedLate.set(peer, { stage, step, stashes });
            this.options.onPlaced();
          })
          .catch((err: Error) => log.warn({ node: peer.shortId, err: err.message }, 'could not place node'))
          .finally(() => this.loading.delete(peer)),
      );
    }
    if (loads.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(loads),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, JOIN_WAIT_MS))),
    ]);
    clearTimeout(timer);
  }

  /** Moves replicas while that clearly raises the slowest stage's rate (always, for a stage left empty). */
  private async rebalance(): Promise<void> {
    const { sessions, stageFlops, log, run } = this.options;
    for (let i = 0; i < run.ranges.length; i++) {
      const move = rebalanceMove(this.placed(), stageFlops, undefined, this.minReplicas);
      const peer = move && [...sessions.peers].find((p) => p.nodeId === move.id);
      if (!move || !peer) return;
      // Stages count from 1 in what people read.
      log.info(
        { node: peer.shortId, from: move.from + 1, to: move.to + 1 },
        'moving a node to balance the stages',
      );
      await this.assign(peer, move.to).catch((err: Error) =>
        log.warn({ node: peer.shortId, err: err.message }, 'could not move node'),
      );
    }
  }

  private async assign(peer: Peer, stage: number): Promise<void> {
    const step = this.options.step();
    const stashes = await this.sendStage(peer, stage, step, await this.stageState(stage));
    this.placeAt(peer, stage, stashes);
    this.options.onPlaced();
  }

  /** Sends the stage's state; resolves with the stashes the node reports once it has loaded it. */
  private async sendStage(peer: Peer, stage: number, step: number, state: FlatState): Promise<number> {
    const range = this.options.run.ranges[stage]!;
    const { message } = await this.options.sessions.request(peer, 'loaded', step, [], () =>
      peer.send({ type: 'assign', range, optimizerStep: state.optimizerStep, step }, stateTensors(state)),
    );
    return message.type === 'loaded' ? (message.stashes ?? 1) : 1;
  }

  private placeAt(peer: Peer, stage: number, stashes: number): void {
    const range = this.options.run.ranges[stage]!;
    peer.stage = stage;
    peer.stashes = stashes;
    peer.clearWork();
    this.options.log.info(
      {
        node: peer.shortId,
        stage: stageLabel({ ...range, lastBlock: range.endBlock - 1 }),
        step: this.options.step(),
        stashes,
      },
      'node placed',
    );
  }

  /** The current weights and moments of a stage: from a replica, the checkpoint of this step, or the seed. */
  private async stageState(stage: number): Promise<FlatState> {
    const cached = this.stateCache.get(stage);
    if (cached) return cached;
    const { run, sessions, store, config } = this.options;
    const step = this.options.step();
    const paramCount = stageParamCount(run.model, run.ranges[stage]!);
    const source = sessions.membersOf(stage)[0];
    let state: FlatState;
    if (source) {
      const requestId = ++this.requestIds;
      const { message, tensors } = await sessions.request(
        source,
        'state',
        requestId,
        stateSpec(paramCount),
        () => source.send({ type: 'stateRequest', requestId }),
      );
      if (message.type !== 'state') throw new Error(`expected state, got ${message.type}`);
      state = stateFromTensors(message.optimizerStep, tensors);
      const problem = stateProblem(state);
      if (problem) {
        sessions.drop(source, problem);
        throw new Error(`node ${source.shortId} ${problem}`);
      }
    } else {
      const checkpoint = store.latestCheckpoint();
      if (checkpoint && checkpoint.step === step) {
        loadCheckpoint(checkpoint.dir, run).forEach((s, i) => this.stateCache.set(i, s));
        return this.stateCache.get(stage)!;
      }
      if (step !== 0) throw new Error(`no source for the weights of stage ${stage} at step ${step}`);
      state = seedState(run.model, run.ranges[stage]!, config.seed);
    }
    this.stateCache.set(stage, state);
    return state;
  }
}
