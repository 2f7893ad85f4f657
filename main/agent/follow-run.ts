import type { EventEmitter } from 'node:events';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import type { Agent } from './agent.js';

/** The node runtime as seen from here: it announces the stage it was given. */
export interface StageAnnouncer extends EventEmitter {
  on(
    event: 'assigned',
    listener: (range: StageRange, spec: { config: GptConfig; shape: MicroBatchShape }) => void,
  ): this;
}

interface RunStatus {
  step: number;
  steps: number;
  /** Absent from coordinators older than this field. */
  microBatches?: { done: number; total: number };
}

/** How far the network is into its current step, 0 to 1. */
function stepFraction(status: RunStatus): number {
  const mb = status.microBatches;
  return mb && mb.total > 0 ? Math.min(1, Math.max(0, mb.done / mb.total)) : 0;
}

export interface FollowRunOptions {
  /** How often the coordinator's status API is read. */
  pollMs?: number;
  fetch?: typeof globalThis.fetch;
  onError?: (message: string) => void;
}

/** The coordinator's HTTP API lives on the same port as its WebSocket. */
export function coordinatorHttpBase(coordinatorUrl: string): string {
  const url = new URL(coordinatorUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = '';
  url.search = '';
  return url.toString().replace(/\/$/, '');
}

/**
 * Feeds the dashboard what the node and the network know: the stage this node trains (and the GPU memory it
 * needs, which the policy checks against the VRAM cap), the run's progress and the network's loss curve.
 * Returns a function that stops following.
 */
export function followRun(
  agent: Agent,
  runtime: StageAnnouncer,
  coordinatorUrl: string,
  options: FollowRunOptions = {},
): () => void {
  const fetchJson = async <T>(path: string): Promise<T> => {
    const res = await (options.fetch ?? globalThis.fetch)(`${coordinatorHttpBase(coordinatorUrl)}${path}`);
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  };
  const onAssigned = (range: StageRange, spec: { config: GptConfig; shape: MicroBatchShape }): void => {
    const stage = {
      index: range.index,
      count: range.count,
      firstBlock: range.firstBlock,
      lastBlock: range.endBlock - 1,
    };
    agent.setStage(stage, estimateStageMemoryBytes(spec.config, range, spec.shape));
  };
  runtime.on('assigned', onAssigned);

  let lastLossStep = -1;
  const poll = async (): Promise<void> => {
    try {
      const [status, losses] = await Promise.all([
        fetchJson<RunStatus>('/status'),
        fetchJson<{ step: number; loss: number }[]>('/api/losses'),
      ]);
      agent.setProgress({ step: status.step, stepFraction: stepFraction(status), totalSteps: status.steps });
      for (const point of losses) {
        if (point.step > lastLossStep) agent.addLoss(point.step, point.loss);
        lastLossStep = Math.max(lastLossStep, point.step);
      }
    } catch (err) {
      options.onError?.(`could not read the run's status from the coordinator: ${(err as Error).message}`);
    }
  };
  void poll();
  const timer = setInterval(() => void poll(), options.pollMs ?? 5000);
  timer.unref();
  return () => {
    clearInterval(timer);
    runtime.off('assigned', onAssigned);
  };
}
