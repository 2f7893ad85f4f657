import type { StageTrainer } from '../../gpu/stage/types.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { openEngine, type StageSpec } from '../../main/node/stage-factory.js';
import type { EngineKind } from '../../shared/protocol/messages.js';

/** How an adversarial node lies, at the stage engine: everything else is the real node runtime. */
export type Lie =
  | 'nan-activations'
  | 'nan-gradients'
  | 'nan-state'
  | 'absurd-loss'
  | 'random-activations'
  | 'scaled-gradients'
  | 'noisy-input-gradients';

/**
 * A `createStage` for NodeRuntime that builds the real CPU stage and then corrupts one of its outputs, the
 * way a faulty or malicious contributor would. `scale`: what 'scaled-gradients' multiplies its gradient by.
 */
export function misbehavingStage(
  lie: Lie,
  scale = 10,
): (engine: EngineKind, spec: StageSpec) => Promise<StageTrainer> {
  return async (_engine, spec) => {
    const stage = await (await openEngine('cpu')).create(spec);
    const forward = stage.forward.bind(stage);
    const backward = stage.backward.bind(stage);
    const exportGrads = stage.exportGrads.bind(stage);
    const exportState = stage.exportState.bind(stage);
    stage.forward = async (input, targets) => {
      const result = await forward(input, targets);
      if (result.kind === 'loss') {
        if (lie === 'absurd-loss') return { kind: 'loss', loss: -1e300 };
        // A node that never runs the model: on the last stage it makes up a loss, plausible for a byte-level
        // model early in training, so no value check can tell.
        if (lie === 'random-activations') return { kind: 'loss', loss: 2 + Math.random() * 4 };
        return result;
      }
      if (lie === 'nan-activations') return { kind: 'activations', data: result.data.map(() => NaN) };
      if (lie === 'random-activations')
        return { kind: 'activations', data: result.data.map(() => Math.random() * 2 - 1) };
      return result;
    };
    // Its own gradients stay honest (no norm check can see it); the one it sends back is scaled by 1 to 2,
    // differently each time, which the previous stage's weights then learn from.
    stage.backward = async (gradOut, lossScale) => {
      const grad = await backward(gradOut, lossScale);
      if (lie !== 'noisy-input-gradients' || !grad) return grad;
      return grad.map((g) => g * (1 + Math.random()));
    };
    stage.exportGrads = async () => {
      const grads = await exportGrads();
      if (lie === 'nan-gradients') return grads.map((g, i) => (i % 7 === 0 ? NaN : g));
      if (lie === 'scaled-gradients') return grads.map((g) => g * scale);
      return grads;
    };
    stage.exportState = async () => {
      const state = await exportState();
      if (lie !== 'nan-state') return state;
      return { ...state, params: state.params.map((t) => ({ ...t, data: t.data.map(() => Infinity) })) };
    };
    return stage;
  };
}

/** Every close the coordinator sent this node, with its reason. */
export function closes(node: NodeRuntime): Array<{ code: number; reason: string }> {
  const seen: Array<{ code: number; reason: string }> = [];
  node.on('disconnected', (e: { code: number; reason: string }) => seen.push(e));
  return seen;
}
