/**
 * Spreads a burst of sends over several turns of the event loop. An apply to 1,000 replicas is 1,000 socket
 * writes of a stage's gradient; done in one go they hold the loop for hundreds of ms on a busy machine, and
 * every heartbeat that arrives meanwhile waits for all of them. Paced, a burst sends for at most `sliceMs`,
 * then lets the loop read its sockets (and answer pings, which are never paced) before it goes on.
 * Paced sends keep their order among themselves.
 */
export class SendPacer {
  private readonly backlog: Array<() => void> = [];
  private next = 0;
  /** When the current slice began; null when no slice is open (the next send starts one). */
  private sliceStarted: number | null = null;

  constructor(private readonly sliceMs: number) {}

  /** Sends now while the slice has time left and nothing waits, else after what waits. */
  send(send: () => void): void {
    if (this.next < this.backlog.length) return void this.backlog.push(send);
    if (this.sliceStarted === null) {
      this.sliceStarted = performance.now();
      setImmediate(() => this.nextSlice());
    } else if (performance.now() - this.sliceStarted >= this.sliceMs) {
      return void this.backlog.push(send);
    }
    send();
  }

  private nextSlice(): void {
    if (this.next === this.backlog.length) {
      this.sliceStarted = null;
      this.backlog.length = 0;
      this.next = 0;
      return;
    }
    const started = performance.now();
    this.sliceStarted = started;
    while (this.next < this.backlog.length && performance.now() - started < this.sliceMs)
      this.backlog[this.next++]!();
    setImmediate(() => this.nextSlice());
  }
}
