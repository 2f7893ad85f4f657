import { WebSocket } from 'ws';
import { authChallengeBytes } from '../../shared/protocol/auth.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import type { NodeMessage, Outgoing } from '../../shared/protocol/messages.js';
import { encodeMessage } from '../../shared/protocol/wire.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';

type Incoming = { type: string; [key: string]: unknown };

/** A hand-driven protocol client that can send anything, for probing the coordinator with bad input. */
export class RawClient {
  readonly messages: Incoming[] = [];
  readonly binaries: Uint8Array[] = [];
  readonly closed: Promise<number>;
  private nextId = 1;
  readonly keys = Ed25519Keys.generate();

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) this.binaries.push(new Uint8Array(data));
      else this.messages.push(JSON.parse(data.toString('utf8')) as Incoming);
    });
    this.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
    ws.on('error', () => {});
  }

  static open(url: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const client = new RawClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('error', reject);
    });
  }

  send(message: Outgoing<NodeMessage>, tensors: Tensor[] = []): void {
    for (const part of encodeMessage<NodeMessage>(this.nextId++, message, tensors)) this.ws.send(part);
  }

  async next(type: string, timeoutMs = 60_000): Promise<Incoming> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m) => m.type === type);
      if (i >= 0) return this.messages.splice(i, 1)[0]!;
      if (Date.now() > deadline || this.ws.readyState === WebSocket.CLOSED)
        throw new Error(`no ${type} message arrived`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Runs hello / challenge / auth; `sign` may be swapped to forge a signature. */
  async authenticate(sign = (data: Uint8Array): Uint8Array => this.keys.sign(data)): Promise<void> {
    this.send({
      type: 'hello',
      nodeId: this.keys.publicKeyHex,
      client: 'raw',
      engine: 'cpu',
      receiptCursor: 0,
    });
    const challenge = await this.next('challenge');
    const bytes = authChallengeBytes(
      challenge.nonce as string,
      challenge.coordinatorKey as string,
      this.keys.publicKeyHex,
    );
    this.send({ type: 'auth', signature: Buffer.from(sign(bytes)).toString('base64') });
  }

  close(): void {
    this.ws.terminate();
  }
}
