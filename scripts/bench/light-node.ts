/**
 * A simulated lightweight node for the load bench (bench-load.ts): no engine, it speaks the whole protocol and
 * answers every task, gradient request and apply with correctly shaped zeros.
 */
import { WebSocket } from 'ws';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import { stageParamCount } from '../../gpu/model/params.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { authChallengeBytes } from '../../shared/protocol/auth.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import type { NodeMessage, Outgoing } from '../../shared/protocol/messages.js';
import { stateTensors } from '../../shared/protocol/stage-state.js';
import { encodeMessage } from '../../shared/protocol/wire.js';

type Incoming = Record<string, unknown> & { type: string };

export class LightNode {
  readonly receipts = new Map<string, number>();
  statements = 0;
  placed = false;
  private readonly keys = Ed25519Keys.generate();
  private readonly ws: WebSocket;
  private id = 1;
  private model!: GptConfig;
  private shape!: MicroBatchShape;
  private range: StageRange | null = null;
  private pong: ((ms: number) => void) | null = null;
  readonly welcomed: Promise<void>;

  constructor(
    url: string,
    private readonly progress: (line: string) => void,
  ) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.ws.on('error', (err) => this.progress(`node socket error: ${err.message}`));
    let welcomed!: () => void;
    this.welcomed = new Promise((r) => (welcomed = r));
    this.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      const m = JSON.parse(data.toString('utf8')) as Incoming;
      if (m.type === 'welcome') welcomed();
      this.onMessage(m);
    });
    this.ws.once('open', () =>
      this.send({
        type: 'hello',
        nodeId: this.keys.publicKeyHex,
        client: 'bench-load',
        engine: 'cpu',
        receiptCursor: 0,
      }),
    );
  }

  private send(message: Outgoing<NodeMessage>, tensors: Tensor[] = []): void {
    for (const part of encodeMessage<NodeMessage>(this.id++, message, tensors)) this.ws.send(part);
  }

  private zeros(length: number, shape = [length]): Tensor {
    return { dtype: 'f32', shape, data: new Float32Array(length) };
  }

  private boundary(): Tensor {
    const { batch, seq } = this.shape;
    return this.zeros(batch * seq * this.model.width, [batch, seq, this.model.width]);
  }

  private paramCount(): number {
    return stageParamCount(this.model, this.range!);
  }

  private state(optimizerStep: number): Tensor[] {
    const n = this.paramCount();
    return stateTensors({
      optimizerStep,
      params: new Float32Array(n),
      m: new Float32Array(n),
      v: new Float32Array(n),
    });
  }

  private onMessage(m: Incoming): void {
    switch (m.type) {
      case 'challenge': {
        const bytes = authChallengeBytes(
          m.nonce as string,
          m.coordinatorKey as string,
          this.keys.publicKeyHex,
        );
        return this.send({ type: 'auth', signature: Buffer.from(this.keys.sign(bytes)).toString('base64') });
      }
      case 'welcome':
        this.model = m.model as GptConfig;
        this.shape = m.shape as MicroBatchShape;
        return this.send({ type: 'join' });
      case 'assign':
        this.range = m.range as StageRange;
        this.placed = true;
        return this.send({ type: 'loaded', step: m.step as number, stashes: 4 });
      case 'task': {
        const first = this.range!.index === 0;
        const kind = m.kind as string;
        const loss = kind === 'forwardBackward' || kind === 'evaluate' ? 5.5 : undefined;
        const carries = kind === 'forward' || ((kind === 'backward' || kind === 'forwardBackward') && !first);
        return this.send(
          { type: 'result', taskId: m.taskId as number, loss, busyMs: 1 },
          carries ? [this.boundary()] : [],
        );
      }
      case 'gradsRequest': {
        const ids = { type: 'grads' as const, step: m.step as number, attempt: m.attempt as number };
        // A stage's only replica keeps its gradient and sends its summary.
        if (m.summary) return this.send({ ...ids, summary: { finite: true, maxAbs: 0, squaredSum: 0 } });
        return this.send(ids, [this.zeros(this.paramCount())]);
      }
      case 'apply': {
        const optimizerStep = (m.step as number) + 1;
        return this.send(
          { type: 'applied', step: m.step as number, optimizerStep },
          m.sendState ? this.state(optimizerStep) : [],
        );
      }
      case 'stateRequest':
        return this.send(
          { type: 'state', requestId: m.requestId as number, optimizerStep: 0 },
          this.state(0),
        );
      case 'receipt': {
        const id = (m.signed as { receipt: { receiptId: string } }).receipt.receiptId;
        this.receipts.set(id, (this.receipts.get(id) ?? 0) + 1);
        return;
      }
      case 'credits':
        this.statements++;
        return;
      case 'pong':
        this.pong?.(performance.now() - (m.sentAt as number));
        this.pong = null;
        return;
      default:
        return;
    }
  }

  ping(): Promise<number> {
    return new Promise((resolvePing) => {
      this.pong = resolvePing;
      this.send({ type: 'ping', sentAt: performance.now() });
    });
  }

  close(): void {
    this.ws.terminate();
  }
}
