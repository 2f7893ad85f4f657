import type { Logger } from 'pino';
import type { FlatState } from '../gpu/model/flat-state.js';
import type { AdamWSettings } from '../gpu/stage/types.js';
import { stateFromTensors, stateSpec } from '../shared/protocol/stage-state.js';
import type { Peer } from './peer.js';
import type { Request } from './sessions.js';
import { AttemptFailed, type WorkUnit } from './step-attempt.js';
import { Misbehaviour, valuesProblem } from './value-checks.js';

export interface AveragedGradients {
  /** Each stage's gradient, summed over the replicas that worked on it. */
  grads: Float32Array[];
  /** `min(1, gradClip / norm)` over the global norm of every stage's sum; 1 when clipping is off. */
  clipScale: number;
}

/**
 * Gathers the gradients of one attempt from every replica that worked, sums each stage's in node-id order
 * (so every replica later imports the same bits), and computes the global clip scale.
 */
export async function averageGradients(
  request: Request,
  members: Peer[][],
  paramCounts: number[],
  units: readonly WorkUnit[],
  step: number,
  attempt: number,
  gradClip: number,
): Promise<AveragedGradients> {
  const grads = await Promise.all(
    members.map(async (stagePeers, stage) => {
      const n = paramCounts[stage]!;
      const contributors = stagePeers.filter((p) => units.some((u) => u.peer === p));
      const parts = await Promise.all(
        contributors.map((p) =>
          request(p, 'grads', attempt, [{ dtype: 'f32', shape: [n] }], () =>
            p.send({ type: 'gradsRequest', step, attempt }),
          ),
        ),
      );
      const sum = new Float32Array(n);
      for (const [i, part] of parts.entries()) {
        const g = part.tensors[0]!.data as Float32Array;
        // One replica's NaN would poison every replica's weights: it is refused, its sender dropped, the step replayed.
        const problem = valuesProblem('gradients', g);
        if (problem) throw new Misbehaviour(contributors[i]!, problem);
        for (let i = 0; i < n; i++) sum[i]! += g[i]!;
      }
      return sum;
    }),
  );
  let squared = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) squared += g[i]! * g[i]!;
  const norm = Math.sqrt(squared);
  if (!Number.isFinite(norm)) throw new AttemptFailed(`gradient norm is ${norm}`);
  const clipScale = gradClip > 0 && norm > gradClip ? gradClip / norm : 1;
  return { grads, clipScale };
}

/**
 * Sends every replica its stage's summed gradient and the clip scale; each runs AdamW. When `checkpointDue`,
 * the first replica of each stage returns its new state. Returns those states (null where none came back).
 */
export async function applyStep(
  request: Request,
  members: Peer[][],
  { grads, clipScale }: AveragedGradients,
  step: number,
  adamw: AdamWSettings,
  checkpointDue: boolean,
  log: Logger,
): Promise<Array<FlatState | null>> {
  const states: Array<FlatState | null> = members.map(() => null);
  await Promise.all(
    members.flatMap((stagePeers, stage) =>
      stagePeers.map(async (peer, i) => {
        const sendState = checkpointDue && i === 0;
        const n = grads[stage]!.length;
        try {
          const { message, tensors } = await request(
            peer,
            'applied',
            step,
            sendState ? stateSpec(n) : [],
            () =>
              peer.send({ type: 'apply', step, clipScale, adamw, sendState }, [
                { dtype: 'f32', shape: [n], data: grads[stage]! },
              ]),
          );
          if (sendState && message.type === 'applied')
            states[stage] = stateFromTensors(message.optimizerStep, tensors);
        } catch (err) {
          // A replica lost while applying: the others hold the new weights; the next step handles a stage left empty.
          log.warn({ node: peer.shortId, err: (err as Error).message }, 'replica lost during apply');
        }
      }),
    ),
  );
  return states;
}
