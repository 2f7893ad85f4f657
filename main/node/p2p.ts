import type { Stream } from '@libp2p/interface';
import type { Tensor } from '../../shared/protocol/frame.js';
import type { Outgoing } from '../../shared/protocol/messages.js';
import {
  ProtocolError,
  defaultWireLimits,
  encodeMessage,
  type Received,
  type WireReader,
} from '../../shared/protocol/wire.js';

/** The libp2p protocol that carries activations and gradients between neighbouring stages. */
export const TENSOR_PROTOCOL = '/tributary/tensors/1.0.0';

/**
 * Records on a tensor stream: 1 byte kind (0 = a JSON control message, 1 = a tensor frame), 4 bytes length
 * (big-endian), then the part exactly as it travels on the coordinator's WebSocket, so the same WireReader
 * checks apply on both ends.
 */
const HEADER_BYTES = 5;
const TEXT = 0;
const BINARY = 1;

function record(part: string | Uint8Array): Uint8Array {
  const body = typeof part === 'string' ? new TextEncoder().encode(part) : part;
  const out = new Uint8Array(HEADER_BYTES + body.byteLength);
  out[0] = typeof part === 'string' ? TEXT : BINARY;
  new DataView(out.buffer).setUint32(1, body.byteLength);
  out.set(body, HEADER_BYTES);
  return out;
}

/** Sends one message and its tensors, waiting whenever the stream's buffer is full (back-pressure). */
export async function sendTensorMessage<M>(
  stream: Stream,
  id: number,
  message: Outgoing<M>,
  tensors: Tensor[] = [],
): Promise<void> {
  for (const part of encodeMessage<M>(id, message, tensors)) {
    if (!stream.send(record(part))) await stream.onDrain();
  }
}

/**
 * Reads messages from a tensor stream through `reader` (sizes, schema, frame headers, the dtype and shape the
 * receiver expects) until the sender closes it. A record over the reader's limit is refused before it is
 * buffered. Any violation aborts the stream and throws the ProtocolError, as the coordinator's WebSocket
 * closes on one; a stream that fails under it (reset, connection lost) throws that error as it is.
 */
export async function* readTensorMessages<M extends { id: number; tensors: number }>(
  stream: Stream,
  reader: WireReader<M>,
  maxBytes = defaultWireLimits.maxBytes,
): AsyncGenerator<Received<M>> {
  let pending = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray();
      const joined = new Uint8Array(pending.byteLength + bytes.byteLength);
      joined.set(pending);
      joined.set(bytes, pending.byteLength);
      let offset = 0;
      while (joined.byteLength - offset >= HEADER_BYTES) {
        const kind = joined[offset]!;
        const length = new DataView(joined.buffer, joined.byteOffset + offset + 1, 4).getUint32(0);
        if (kind !== TEXT && kind !== BINARY)
          throw new ProtocolError('bad-frame', `unknown record kind ${kind} on the tensor stream`);
        if (length > maxBytes)
          throw new ProtocolError('too-large', `a ${length}-byte record is over the ${maxBytes}-byte limit`);
        if (joined.byteLength - offset < HEADER_BYTES + length) break;
        const body = joined.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length);
        offset += HEADER_BYTES + length;
        const received =
          kind === TEXT ? reader.readText(new TextDecoder().decode(body)) : reader.readBinary(body.slice());
        if (received) yield received;
      }
      pending = joined.slice(offset);
    }
    // Closed inside a record or before a message's tensors: unrefused, that message would vanish and its
    // consumer wait for it until the coordinator dropped the consumer (found by
    // test/adversarial/message-fuzz.test.ts).
    if (pending.byteLength > 0 || reader.midMessage)
      throw new ProtocolError('bad-frame', 'the tensor stream ended inside a message');
  } catch (err) {
    stream.abort(err as Error);
    throw err;
  }
}
