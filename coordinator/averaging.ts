import type { Logger } from 'pino';
import type { FlatState } from '../gpu/model/flat-state.js';
import type { AdamWSettings } from '../gpu/stage/types.js';
import type { CoordinatorMessage } from '../shared/protocol/messages.js';
import { stateFromTensors, stateSpec } from '../shared/protocol/stage-state.js';
import { encodeShared } from '../shared/protocol/wire.js';
import type { GradientNorms, Judged } from './gradient-norms.js';
import type { Peer } from './peer.js';
import type { Request } from './sessions.js';
import { AttemptFailed, type WorkUnit } from './step-attempt.js';
import {
  gradientLimit,
  Misbehaviour,
  Overflow,
  summaryProblem,
  summarizeValues,
  valuesProblem,
} from './value-checks.js';

export interface AveragedGradients {
  /**
   * Each stage's gradient, summed over the replicas that worked on it; null for a stage with one replica,
   * which keeps its own (nothing to average, so the gradient never crosses the network: about 2 x 4 bytes
   * per parameter per step saved, and the step's end no longer waits on the largest transfer).
   */
  grads: Array<Float32Array | null>;
  /** `min(1, gradClip / norm)` over the global norm of every stage's sum; 1 when clipping is off. */
  clipScale: number;
  /** Per stage, each contributor's gradient norm, work units and judgement: history once the step commits. */
  judged: Judged[][];
}

/**
 * Gathers the gradients of one attempt from every replica that worked, sums each stage's in node-id order
 * (so every replica later imports the same bits), and computes the global clip scale. A stage's only
 * replica sends a summary instead: its values are checked as the gradient itself would be, and its squared
 * sum joins the norm. A replica whose gradient per work unit is out of line with its stage (`norms`) is
 * scaled down to the line before it is summed (one scaled gradient would reach every replica's weights),
 * and refused like a NaN when it is out of line again and again.
 */
export async function averageGradients(
  request: Request,
  members: Peer[][],
  paramCounts: number[],
  units: readonly WorkUnit[],
  step: number,
  attempt: number,
  gradClip: number,
  norms: GradientNorms,
  /** Mixed precision's loss scale: gradients arrive multiplied by it, and non-finite ones are its overflow. */
  lossScale: number | null = null,
): Promise<AveragedGradients> {
  const scale = lossScale ?? 1;
  // A non-finite gradient is an overflow of the scaled backward in mixed precision, a fault otherwise.
  const refuse = (peer: Peer, problem: string, finite: boolean): Error =>
    lossScale !== null && !finite
      ? new Overflow(peer, `overflowed f16 in its gradients (${problem})`)
      : new Misbehaviour(peer, problem);
  // Per stage, then added in stage order: the norm's bits must not depend on which reply came first.
  const squaredSums = members.map(() => 0);
  const judged: Judged[][] = members.map(() => []);
  const unitsOf = (peer: Peer): number => units.filter((u) => u.peer === peer).length;
  const grads = await Promise.all(
    members.map(async (stagePeers, stage) => {
      const n = paramCounts[stage]!;
      if (stagePeers.length === 1) {
        const only = stagePeers[0]!;
        const { message } = await request(only, 'grads', attempt, [], () =>
          only.send({ type: 'gradsRequest', step, attempt, summary: true }),
        );
        const summary = message.type === 'grads' ? message.summary : undefined;
        if (!summary) throw new Misbehaviour(only, 'sent no summary of its gradient');
        const problem = summaryProblem('gradients', summary, gradientLimit(scale));
        if (problem) throw refuse(only, problem, summary.finite);
        squaredSums[stage] = summary.squaredSum;
        judged[stage] = norms.judge(stage, [
          { peer: only, norm: Math.sqrt(summary.squaredSum) / scale, units: unitsOf(only) },
        ]);
        return null;
      }
      const contributors = stagePeers.filter((p) => unitsOf(p) > 0);
      const parts = await Promise.all(
        contributors.map((p) =>
          request(p, 'grads', attempt, [{ dtype: 'f32', shape: [n] }], () =>
            p.send({ type: 'gradsRequest', step, attempt }),
          ),
        ),
      );
      const gs = parts.map((part) => part.tensors[0]!.data as Float32Array);
      const summaries = gs.map(summarizeValues);
      for (const [i, g] of gs.entries()) {
        // One replica's NaN would poison every replica's weights: it is refused, its sender dropped, the step replayed.
        const problem = valuesProblem('gradients', g, gradientLimit(scale));
        if (problem) throw refuse(contributors[i]!, problem, summaries[i]!.finite);
      }
      judged[stage] = norms.judge(
        stage,
        summaries.map((summary, i) => ({
          peer: contributors[i]!,
          norm: Math.sqrt(summary.squaredSum) / scale,
          units: unitsOf(contributors[i]!),
        })),
      );
      const refused = norms.refused(judged[stage]);
      if (refused) throw new Misbehaviour(refused.peer, refused.reason);
      const sum = new Float32Array(n);
      for (const [k, g] of gs.entries()) {
        const factor = judged[stage][k]!.scale;
        for (let i = 0; i < n; i++) sum[i]! += g[i]! * factor;
      }
      squaredSums[stage] = summarizeValues(sum).squaredSum;
      return sum;
    }),
  );
  const norm = Math.sqrt(squaredSums.reduce((a, b) => a + b, 0)) / scale;
  if (!Number.isFinite(norm)) throw new AttemptFailed(`gradient norm is ${norm}`);
  // AdamW takes the gradient times clipScale: in mixed precision that also undoes the loss scale, exactly
  // (a power of two), as the single-process Trainer does.
  const clipScale = (gradClip > 0 && norm > gradClip ? gradClip / norm : 1) / scale;
  return { grads, clipScale, judged };
}

/** A stage's state after the step, and the replica that sent it (to blame when it is broken). */
export interface KeptState {
  state: FlatState;
  from: Peer;
}

/**
 * Sends every replica its stage's summed gradient and the clip scale; each runs AdamW. When `checkpointDue`,
 * the first replica of each stage returns its new state. Returns those states (null where none came back).
 */
export async function applyStep(
  request: Request,
  members: Peer[][],
  paramCounts: number[],
  { grads, clipScale }: AveragedGradients,
  step: number,
  adamw: AdamWSettings,
  checkpointDue: boolean,
  log: Logger,
): Promise<Array<KeptState | null>> {
  const states: Array<KeptState | null> = members.map(() => null);
  // Every replica that returns no state gets its stage's sum as the same bytes, encoded once.
  const shared = grads.map(
    (sum) =>
      sum &&
      encodeShared<CoordinatorMessage>({ type: 'apply', step, clipScale, adamw, sendState: false }, [
        { dtype: 'f32', shape: [sum.length], data: sum },
      ]),
  );
  await Promise.all(
    members.flatMap((stagePeers, stage) =>
      stagePeers.map(async (peer) => {
        // The first replica still here returns the state (one that left mid-step no longer holds it).
        const sendState = checkpointDue && peer === stagePeers.find((p) => !p.channel.isClosed);
        const sum = grads[stage]!;
        try {
          const { message, tensors } = await request(
            peer,
            'applied',
            step,
            sendState ? stateSpec(paramCounts[stage]!) : [],
            () =>
              sum && !sendState
                ? peer.sendEncoded(shared[stage]!)
                : sum
                  ? peer.send({ type: 'apply', step, clipScale, adamw, sendState }, [
                      { dtype: 'f32', shape: [sum.length], data: sum },
                    ])
                  : peer.send({ type: 'apply', step, clipScale, adamw, sendState, own: true }),
          );
          if (sendState && message.type === 'applied')
            states[stage] = { state: stateFromTensors(message.optimizerStep, tensors), from: peer };
        } catch (err) {
          // A replica lost while applying: the others hold the new weights; the next step handles a stage left empty.
          log.warn({ node: peer.shortId, err: (err as Error).message }, 'replica lost during apply');
        }
      }),
    ),
  );
  return states;
}
