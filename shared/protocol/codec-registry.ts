import { CodecError, isCodecName, type ActivationCodec } from './codec.js';
import { fp16Codec } from './codec-fp16.js';
import { int8Codec } from './codec-int8.js';
import { noneCodec } from './codec-none.js';
import { createSubspaceCodec, type SubspaceBasis } from './codec-subspace.js';

/**
 * The codec a run names, refused with a clear error when this build does not know it. The subspace codec
 * needs the run's basis (gpu/codec/basis.ts builds it from the seed).
 */
export function resolveCodec(name: string, basis?: () => SubspaceBasis): ActivationCodec {
  if (!isCodecName(name))
    throw new CodecError(`unknown activation codec "${name}"; this node knows none, fp16, int8, subspace`);
  switch (name) {
    case 'none':
      return noneCodec;
    case 'fp16':
      return fp16Codec;
    case 'int8':
      return int8Codec;
    case 'subspace':
      if (!basis) throw new CodecError('the subspace codec needs the run basis');
      return createSubspaceCodec(basis());
  }
}
