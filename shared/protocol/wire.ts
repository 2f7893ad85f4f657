import type { z } from 'zod';
import {
  FrameError,
  decodeFrame,
  defaultFrameLimits,
  encodeFrame,
  type DType,
  type FrameLimits,
  type Tensor,
} from './frame.js';
import type { CodecName } from './codec.js';
import { PROTOCOL_VERSION, type Outgoing } from './messages.js';

/**
 * The one place where bytes from the network become messages. A `WireReader` checks, in order: text size,
 * JSON syntax, the schema, tensor count, then each following binary frame's header, id, index, dtype and the
 * exact shape the receiver expects for that message. Anything else is a `ProtocolError`; the transport
 * answers it with an error message and closes the connection, so a bad peer can never desynchronise it.
 */
export interface TensorSpec {
  dtype: DType;
  shape: number[];
  /** The codec the run uses for this tensor and its payload length; absent means none (plain numbers). */
  codec?: { name: CodecName; payloadBytes: number };
}

export interface WireLimits extends FrameLimits {
  /** Largest JSON text message in bytes. */
  maxTextBytes: number;
}

export const defaultWireLimits: WireLimits = { ...defaultFrameLimits, maxTextBytes: 256 * 1024 };

export class ProtocolError extends Error {
  constructor(
    readonly code:
      'too-large' | 'bad-json' | 'bad-message' | 'bad-frame' | 'bad-shape' | 'unexpected' | 'unauthenticated',
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface Received<M> {
  message: M;
  tensors: Tensor[];
}

/**
 * What tensors a message must carry, decided by the receiver from its own state (run config, the task it
 * sent). Throwing a ProtocolError refuses the message itself (e.g. a result for a task never sent).
 */
export type ExpectTensors<M> = (message: M) => TensorSpec[];

export class WireReader<M extends { id: number; tensors: number }> {
  private pending: { message: M; specs: TensorSpec[]; tensors: Tensor[] } | null = null;

  constructor(
    private readonly schema: z.ZodType<M>,
    private readonly expect: ExpectTensors<M>,
    private readonly limits: WireLimits = defaultWireLimits,
  ) {}

  /** Whether a message has been read whose tensor frames are still due. */
  get midMessage(): boolean {
    return this.pending !== null;
  }

  /** Returns the message when complete, or null while its tensor frames are still to come. */
  readText(text: string): Received<M> | null {
    if (this.pending)
      throw new ProtocolError('unexpected', 'a text message arrived while tensor frames were due');
    if (text.length > this.limits.maxTextBytes) {
      throw new ProtocolError(
        'too-large',
        `text message of ${text.length} bytes exceeds ${this.limits.maxTextBytes}`,
      );
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new ProtocolError('bad-json', 'text message is not JSON');
    }
    const parsed = this.schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
      throw new ProtocolError(
        'bad-message',
        `invalid message${where}: ${issue?.message ?? 'schema mismatch'}`,
      );
    }
    const message = parsed.data;
    const specs = this.expect(message);
    if (specs.length !== message.tensors) {
      throw new ProtocolError(
        'bad-message',
        `message announces ${message.tensors} tensors, ${specs.length} expected`,
      );
    }
    if (specs.length === 0) return { message, tensors: [] };
    this.pending = { message, specs, tensors: [] };
    return null;
  }

  readBinary(bytes: Uint8Array): Received<M> | null {
    const pending = this.pending;
    if (!pending)
      throw new ProtocolError('unexpected', 'a tensor frame arrived without a message announcing it');
    let frame;
    try {
      frame = decodeFrame(bytes, this.limits);
    } catch (err) {
      if (err instanceof FrameError) throw new ProtocolError('bad-frame', err.message);
      throw err;
    }
    const index = pending.tensors.length;
    const spec = pending.specs[index]!;
    if (frame.messageId !== pending.message.id || frame.index !== index) {
      throw new ProtocolError(
        'bad-frame',
        `frame ${frame.messageId}/${frame.index} where ${pending.message.id}/${index} was due`,
      );
    }
    const sameShape =
      frame.shape.length === spec.shape.length && frame.shape.every((d, i) => d === spec.shape[i]);
    if (frame.dtype !== spec.dtype || !sameShape) {
      throw new ProtocolError(
        'bad-shape',
        `tensor ${index} is ${frame.dtype}[${frame.shape.join(', ')}], expected ${spec.dtype}[${spec.shape.join(', ')}]`,
      );
    }
    const codec = spec.codec?.name ?? 'none';
    if (frame.codec !== codec) {
      throw new ProtocolError(
        'bad-frame',
        `tensor ${index} uses the codec ${frame.codec}; this run uses ${codec}`,
      );
    }
    if (spec.codec && frame.tensor.data.byteLength !== spec.codec.payloadBytes) {
      throw new ProtocolError(
        'bad-frame',
        `tensor ${index}: ${codec} payload of ${frame.tensor.data.byteLength} bytes, expected ${spec.codec.payloadBytes}`,
      );
    }
    pending.tensors.push(frame.tensor);
    if (pending.tensors.length < pending.specs.length) return null;
    this.pending = null;
    return { message: pending.message, tensors: pending.tensors };
  }
}

/**
 * The id of a message encoded once for many receivers (`encodeShared`). A Channel numbers its own messages
 * from 1, so 0 never collides with one; the receiver only checks that a tensor frame carries its message's id.
 */
export const SHARED_MESSAGE_ID = 0;

/** One message's text frame and binary frames, in sending order. */
export type EncodedMessage = ReadonlyArray<string | Uint8Array>;

/**
 * Encodes a message once for every peer that gets it (a stage's summed gradient to each of its replicas, a
 * broadcast): the same bytes go to each, instead of a copy of every tensor per peer.
 */
export function encodeShared<M>(message: Outgoing<M>, tensors: Tensor[] = []): EncodedMessage {
  return encodeMessage(SHARED_MESSAGE_ID, message, tensors);
}

/** Encodes one message and its tensors as the text frame and binary frames to send, in order. */
export function encodeMessage<M>(
  id: number,
  message: Outgoing<M>,
  tensors: Tensor[] = [],
): Array<string | Uint8Array> {
  const text = JSON.stringify({ ...message, v: PROTOCOL_VERSION, id, tensors: tensors.length });
  return [text, ...tensors.map((t, i) => encodeFrame(id, i, t))];
}
