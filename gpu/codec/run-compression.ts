import type { ActivationCodec } from '../../shared/protocol/codec.js';
import { resolveCodec } from '../../shared/protocol/codec-registry.js';
import type { GptConfig } from '../model/config.js';
import { buildSubspaceBasis, constrainedBlock, type ConstrainedBlocks, type PositionPart } from './basis.js';
import type { SubspaceConstraint } from './subspace-stage.js';

/** What a run says about its stage boundaries (the run config's `compression`, sent in `welcome`). */
export interface CompressionSettings {
  /** A codec name; a node that does not know it refuses the run. */
  codec: string;
  /** k, the subspace rank (subspace only). */
  rank: number;
  constrainedBlocks: ConstrainedBlocks;
  positions: PositionPart;
}

export interface RunCompression {
  codec: ActivationCodec;
  /** The weight constraint the subspace codec needs on every stage; null for the other codecs. */
  constraint: SubspaceConstraint | null;
}

/** The codec of a run and, for the subspace codec, its seed-derived basis; throws on a codec it does not know. */
export function openCompression(
  s: CompressionSettings,
  config: GptConfig,
  seed: number,
  stages: number,
): RunCompression {
  if (s.codec !== 'subspace') return { codec: resolveCodec(s.codec), constraint: null };
  const basis = buildSubspaceBasis(config, seed, s.rank, s.positions);
  return {
    codec: resolveCodec(s.codec, () => basis),
    constraint: { basis, constrained: constrainedBlock(config, stages, s.constrainedBlocks) },
  };
}
