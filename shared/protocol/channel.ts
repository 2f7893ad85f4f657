import type { Tensor } from './frame.js';
import type { Outgoing } from './messages.js';
import { ProtocolError, encodeMessage, type Received, type WireReader } from './wire.js';

/** The part of a WebSocket a channel needs; `ws` in Node and the browser's WebSocket both fit. */
export interface SocketLike {
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Close code for protocol violations (RFC 6455 "policy violation"). */
export const CLOSE_PROTOCOL = 1008;

/**
 * One side of a protocol connection: numbers outgoing messages, feeds incoming ones through the WireReader,
 * and turns any ProtocolError into an `error` reply and a close. Handler exceptions are reported the same
 * way, so no input can take the process down.
 */
export class Channel<In extends { id: number; tensors: number }, Out> {
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly socket: SocketLike,
    private readonly reader: WireReader<In>,
    private readonly onMessage: (received: Received<In>) => void,
    private readonly onViolation: (error: Error) => void = () => {},
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  send(message: Outgoing<Out>, tensors: Tensor[] = []): void {
    if (this.closed) return;
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffffe ? 1 : this.nextId + 1;
    for (const part of encodeMessage<Out>(id, message, tensors)) this.socket.send(part);
  }

  /** Feeds one WebSocket message. */
  receive(data: string | Uint8Array): void {
    if (this.closed) return;
    try {
      const received = typeof data === 'string' ? this.reader.readText(data) : this.reader.readBinary(data);
      if (received) this.onMessage(received);
    } catch (err) {
      this.fail(err instanceof ProtocolError ? err : new ProtocolError('unexpected', (err as Error).message));
    }
  }

  /** Refuses the peer: sends the reason, closes, and tells the owner. */
  fail(error: ProtocolError): void {
    if (this.closed) return;
    this.send({ type: 'error', code: error.code, message: error.message } as unknown as Outgoing<Out>);
    this.markClosed();
    this.socket.close(CLOSE_PROTOCOL, error.code);
    this.onViolation(error);
  }

  close(code = 1000, reason = ''): void {
    if (this.closed) return;
    this.markClosed();
    this.socket.close(code, reason);
  }

  markClosed(): void {
    this.closed = true;
  }
}
