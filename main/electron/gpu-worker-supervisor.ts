import type { GpuWorkerClient } from './gpu-worker-client.js';

export interface SupervisorOptions {
  /** Opens a fresh worker page and acquires its device; rejects when the GPU is not usable. */
  open: () => Promise<GpuWorkerClient>;
  /** Why the GPU cannot work now ("... restarting in 4 s"), or null once a worker is up. */
  onProblem: (problem: string | null) => void;
  /** Called with each worker once it holds a device. */
  onReady?: (client: GpuWorkerClient) => void;
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** A worker that stayed up this long resets the backoff. */
  stableMs?: number;
  now?: () => number;
  setTimeout?: (callback: () => void, ms: number) => unknown;
}

/**
 * Keeps one GPU worker page alive: when it crashes, its process dies or its device is lost, the page is
 * reopened after a delay that doubles up to a minute (reset once a worker stays up for a while), and the
 * reason is reported so the person sees why nothing trains meanwhile.
 */
export class GpuWorkerSupervisor {
  private client: GpuWorkerClient | null = null;
  private delay: number;
  private startedAt = 0;
  private stopped = false;

  constructor(private readonly options: SupervisorOptions) {
    this.delay = options.firstDelayMs ?? 1000;
  }

  /** The worker that holds a device now; null while (re)starting. */
  get current(): GpuWorkerClient | null {
    return this.client;
  }

  start(): void {
    void this.launch();
  }

  stop(): void {
    this.stopped = true;
    const client = this.client;
    this.client = null;
    client?.close();
  }

  /** The worker failed (crash, lost device, a stage call that broke it): replace it. */
  fail(reason: string): void {
    if (this.stopped) return;
    const broken = this.client;
    this.client = null;
    broken?.close();
    const now = this.options.now?.() ?? Date.now();
    if (now - this.startedAt >= (this.options.stableMs ?? 60_000))
      this.delay = this.options.firstDelayMs ?? 1000;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.options.maxDelayMs ?? 60_000);
    this.options.onProblem(
      `The GPU worker stopped (${reason}); restarting it in ${Math.ceil(delay / 1000)} s`,
    );
    (this.options.setTimeout ?? setTimeout)(() => void this.launch(), delay);
  }

  private async launch(): Promise<void> {
    if (this.stopped) return;
    try {
      const client = await this.options.open();
      if (this.stopped) return client.close();
      this.client = client;
      this.startedAt = this.options.now?.() ?? Date.now();
      client.onEvent((event) => {
        if (event.type === 'device-lost' && this.client === client)
          this.fail(`GPU device lost: ${event.message}`);
      });
      client.onClosed(() => {
        if (this.client === client) this.fail('its page closed');
      });
      this.options.onProblem(null);
      this.options.onReady?.(client);
    } catch (error) {
      this.fail((error as Error).message);
    }
  }
}
