import type {
  GpuWorkerEvent,
  GpuWorkerMessage,
  GpuWorkerReply,
  GpuWorkerRequest,
} from '../gpu-worker/protocol.js';

/** The parts of Electron's MessagePortMain used; tests pass a fake or wrap a DOM MessagePort. */
export interface MainPortLike {
  postMessage(message: unknown): void;
  on(event: 'message', listener: (event: { data: unknown }) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  start(): void;
  close(): void;
}

/** A request as the caller writes it; the client adds the id. */
type Request = GpuWorkerRequest extends infer R
  ? R extends GpuWorkerRequest
    ? Omit<R, 'id'>
    : never
  : never;

interface ReplyByRequest {
  acquire: Extract<GpuWorkerReply, { type: 'acquired' }>;
  release: Extract<GpuWorkerReply, { type: 'released' }>;
  echo: Extract<GpuWorkerReply, { type: 'echo' }>;
  'create-stage': Extract<GpuWorkerReply, { type: 'stage-created' }>;
  'stage-call': Extract<GpuWorkerReply, { type: 'stage-result' }>;
}

export class GpuWorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpuWorkerError';
  }
}

/**
 * Main's side of the GPU worker's port: requests with ids, replies matched to them, and the worker's own
 * events (ready, device lost). Main's MessagePortMain can transfer only ports, so tensors sent from here are
 * copied; those coming back from the page are transferred to main's process.
 */
export class GpuWorkerClient {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (reply: GpuWorkerReply) => void; reject: (error: Error) => void }
  >();
  private readonly eventListeners = new Set<(event: GpuWorkerEvent) => void>();
  private readonly closedListeners = new Set<(reason: string) => void>();
  private closed = false;

  constructor(private readonly port: MainPortLike) {
    port.on('message', ({ data }) => this.receive(data as GpuWorkerMessage));
    port.on('close', () => this.fail('the GPU worker page closed its port'));
    port.start();
  }

  onEvent(listener: (event: GpuWorkerEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Called once when the worker is gone (its port closed, its page died, or close() was called). */
  onClosed(listener: (reason: string) => void): void {
    this.closedListeners.add(listener);
  }

  async request<T extends Request['type']>(
    request: Extract<Request, { type: T }>,
  ): Promise<ReplyByRequest[T]> {
    if (this.closed) throw new GpuWorkerError('the GPU worker is gone');
    const id = this.nextId++;
    const reply = await new Promise<GpuWorkerReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.port.postMessage({ ...request, id });
    });
    if (reply.type === 'error') throw new GpuWorkerError(reply.message);
    return reply as ReplyByRequest[T];
  }

  close(reason = 'the GPU worker client was closed'): void {
    if (this.closed) return;
    this.fail(reason);
    this.port.close();
  }

  private receive(message: GpuWorkerMessage): void {
    if ('id' in message) {
      const entry = this.pending.get(message.id);
      this.pending.delete(message.id);
      entry?.resolve(message);
      return;
    }
    for (const listener of this.eventListeners) listener(message);
  }

  private fail(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const { reject } of this.pending.values()) reject(new GpuWorkerError(reason));
    this.pending.clear();
    for (const listener of this.closedListeners) listener(reason);
  }
}
