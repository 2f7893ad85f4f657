import type { ActivationCodec, BoundaryShape, Decoded, Direction } from './codec.js';
import type { Tensor } from './frame.js';
import type { TensorSpec } from './wire.js';

/** What a receiver expects of a boundary tensor: its logical shape and, encoded, the codec's payload length. */
export function boundaryTensorSpec(
  codec: ActivationCodec,
  shape: BoundaryShape,
  direction: Direction,
): TensorSpec {
  const spec: TensorSpec = { dtype: 'f32', shape: [shape.batch, shape.seq, shape.width] };
  if (codec.name === 'none') return spec;
  return { ...spec, codec: { name: codec.name, payloadBytes: codec.payloadBytes(shape, direction) } };
}

/** A boundary tensor as it goes on the wire: plain f32 for the none codec, the codec's payload otherwise. */
export function encodeBoundary(
  codec: ActivationCodec,
  x: Float32Array,
  shape: BoundaryShape,
  direction: Direction,
  tokens?: Int32Array,
): Tensor {
  if (codec.name === 'none') return { dtype: 'f32', shape: [shape.batch, shape.seq, shape.width], data: x };
  return encodedTensor(codec, shape, codec.encode(x, shape, direction, tokens));
}

/** A boundary tensor of a payload encoded elsewhere (on a GPU stage's device) in a codec other than none. */
export function encodedTensor(codec: ActivationCodec, shape: BoundaryShape, payload: Uint8Array): Tensor {
  return { dtype: 'f32', shape: [shape.batch, shape.seq, shape.width], codec: codec.name, data: payload };
}

/** The numbers of a boundary tensor the wire reader has checked against {@link boundaryTensorSpec}. */
export function decodeBoundary(
  codec: ActivationCodec,
  tensor: Tensor,
  shape: BoundaryShape,
  direction: Direction,
): Decoded {
  if (codec.name === 'none') return { data: tensor.data as Float32Array, tokens: null };
  return codec.decode(tensor.data as Uint8Array, shape, direction);
}
