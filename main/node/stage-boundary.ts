import { isEncodingStage } from '../../gpu/codec/device-boundary.js';
import type { StageInput, StageTrainer } from '../../gpu/stage/types.js';
import type { ActivationCodec, BoundaryShape } from '../../shared/protocol/codec.js';
import { decodeBoundary, encodeBoundary, encodedTensor } from '../../shared/protocol/codec-tensor.js';
import type { Tensor } from '../../shared/protocol/frame.js';

/**
 * A stage's boundary tensors in the run's codec, as they travel. A stage that encodes on its device (the GPU
 * engine with the subspace codec) takes and gives the payloads themselves; any other stage takes decoded
 * floats, and its results are encoded here on the CPU.
 */
export class StageBoundary {
  constructor(
    private readonly stage: StageTrainer,
    private readonly codec: ActivationCodec,
    private readonly shape: BoundaryShape,
  ) {}

  /**
   * Forward: `input` is the first stage's token ids or the incoming boundary tensor; returns the outgoing one
   * (every stage but the last) or the loss (the last, which needs `targets`).
   */
  async forward(
    input: Tensor,
    first: boolean,
    targets?: Int32Array,
  ): Promise<{ kind: 'tensor'; tensor: Tensor } | { kind: 'loss'; loss: number }> {
    const { stage, codec, shape } = this;
    if (isEncodingStage(stage) && stage.boundaryCodec === codec.name) {
      const result = await stage.forwardEncoded(
        first
          ? { kind: 'tokens', tokens: input.data as Int32Array }
          : { kind: 'payload', payload: input.data as Uint8Array },
        targets,
      );
      return result.kind === 'loss'
        ? result
        : { kind: 'tensor', tensor: encodedTensor(codec, shape, result.payload) };
    }
    // The subspace codec's receiver rebuilds the fixed embedding parts from the token ids it was sent, and
    // passes them on with its own output.
    let stageInput: StageInput;
    let tokens: Int32Array | null;
    if (first) {
      tokens = input.data as Int32Array;
      stageInput = { kind: 'tokens', tokens };
    } else {
      const decoded = decodeBoundary(codec, input, shape, 'forward');
      tokens = decoded.tokens;
      stageInput = { kind: 'activations', data: decoded.data };
    }
    const result = await stage.forward(stageInput, targets);
    if (result.kind === 'loss') return result;
    return {
      kind: 'tensor',
      tensor: encodeBoundary(codec, result.data, shape, 'forward', tokens ?? undefined),
    };
  }

  /** Backward: `gradOut` is the incoming gradient (null on the last stage); returns the input's (null on the first). */
  async backward(gradOut: Tensor | null, lossScale: number): Promise<Tensor | null> {
    const { stage, codec, shape } = this;
    if (isEncodingStage(stage) && stage.boundaryCodec === codec.name) {
      const payload = await stage.backwardEncoded((gradOut?.data as Uint8Array) ?? null, lossScale);
      return payload && encodedTensor(codec, shape, payload);
    }
    const g = gradOut && decodeBoundary(codec, gradOut, shape, 'backward').data;
    const gradIn = await stage.backward(g, lossScale);
    return gradIn && encodeBoundary(codec, gradIn, shape, 'backward');
  }
}
