import type { EventEmitter } from 'node:events';
import type { StageRange } from '../../gpu/model/config.js';
import type { NetworkPhase, NetworkSnapshot } from '../../shared/dashboard/contract.js';
import type { RunProgress } from '../../shared/protocol/messages.js';
import { relayedNeighbours, type PeerLink } from '../node/peer-tensors.js';
import { stageLabel } from '../../shared/stage-label.js';
import type { Agent } from './agent.js';

/**
 * The node runtime as seen from here. Its events: `connected`, `retrying` ({ delayMs, code, reason }),
 * `refused` (reason), `runState` ({ state, reason }), `progress` (RunProgress), `assigned` (range, spec),
 * `peerLinks` (each neighbour's route, peer to peer).
 */
export type RunEvents = Pick<EventEmitter, 'on' | 'off'>;
type Listener = Parameters<EventEmitter['on']>[1];

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/**
 * Feeds the agent what the node and the network know, as the node's connection pushes it: where the node
 * stands with the network (connecting, waiting for a stage, training, finished, disconnected and when it
 * retries), the run's progress and the network's loss curve. Nothing is polled. Returns a function that stops following.
 */
export function followRun(
  agent: Agent,
  runtime: RunEvents,
  network: { url: string; coordinatorKey: string | null },
): () => void {
  let stage: StageRange | null = null;
  let runState: { state: 'waiting' | 'training' | 'done'; reason: string } | null = null;
  let tokensPerSecond: number | null = null;
  let throughRelay = 0;
  let phaseNow: NetworkPhase | null = null;
  const set = (phase: NetworkPhase, detail: string, retryAt: number | null = null): void => {
    phaseNow = phase;
    const snapshot: NetworkSnapshot = {
      url: network.url,
      coordinatorKey: network.coordinatorKey,
      phase,
      detail,
      retryAt: retryAt === null ? null : new Date(retryAt).toISOString(),
      tokensPerSecond,
    };
    agent.setNetwork(snapshot);
  };
  /** Connected: what the run and this node's stage say. */
  const settle = (): void => {
    if (runState?.state === 'done') return set('run-finished', `The run finished: ${runState.reason}`);
    if (stage && runState?.state !== 'waiting') {
      const relayed =
        throughRelay === 0
          ? ''
          : `; ${throughRelay} neighbour${throughRelay === 1 ? '' : 's'} reached only through a relay`;
      return set('training', `Training ${stageLabel({ ...stage, lastBlock: stage.endBlock - 1 })}${relayed}`);
    }
    const why = runState?.reason ? `: ${runState.reason}` : '';
    set('waiting-for-stage', `Connected; waiting for a stage${why}`);
  };

  const handlers = {
    connected: () => settle(),
    retrying: ({ delayMs, why }: { delayMs: number; why: string }) => {
      // Disconnected, this node trains no stage and knows nothing current about the network's pace.
      stage = null;
      tokensPerSecond = null;
      agent.setStage(null, null);
      const seconds = Math.max(1, Math.round(delayMs / 1000));
      const sentence = `${why.charAt(0).toUpperCase()}${why.slice(1)}`;
      set(
        'disconnected',
        `${sentence}${/[?.]$/.test(why) ? ' Retrying' : '; retrying'} in ${seconds} s`,
        agent.clock.now() + delayMs,
      );
    },
    refused: (reason: string) => set('refused', `Stopped: ${reason}; check the network in Settings`),
    runState: (next: { state: 'waiting' | 'training' | 'done'; reason: string }) => {
      runState = next;
      settle();
    },
    progress: (p: RunProgress) => {
      tokensPerSecond = p.tokensPerSecond;
      const fraction = p.microBatches.total > 0 ? Math.min(1, p.microBatches.done / p.microBatches.total) : 0;
      agent.setProgress({ step: p.step, stepFraction: fraction, totalSteps: p.steps });
      for (const point of p.losses) agent.addLoss(point.step, point.loss);
      for (const point of p.validation ?? []) agent.addValidationLoss(point.step, point.loss);
      if (p.steps > 0 && p.step >= p.steps) runState = { state: 'done', reason: `all ${p.steps} steps done` };
      settle();
    },
    peerLinks: (links: Record<string, PeerLink>) => {
      throughRelay = relayedNeighbours(links);
      // Said while training; a route learnt late does not undo a disconnection already shown.
      if (phaseNow === 'training') settle();
    },
    // The stage and its memory reached the agent through the host's admitStage, before it was allocated.
    assigned: (range: StageRange) => {
      stage = range;
      settle();
    },
  };
  set('connecting', `Connecting to ${hostOf(network.url)}…`);
  for (const [event, handler] of Object.entries(handlers)) runtime.on(event, handler as Listener);
  return () => {
    for (const [event, handler] of Object.entries(handlers)) runtime.off(event, handler as Listener);
  };
}
