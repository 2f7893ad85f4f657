/**
 * Waits on the GPU without holding a CPU core where the platform's wait polls. dawn.node settles mapAsync and
 * onSubmittedWorkDone by ticking the device on every turn of Node's event loop, so while one is pending the
 * main thread spins; on a CPU adapter (lavapipe) that core is taken from the shader threads. Each call site
 * replays the same recorded work, so the time it took the last two times predicts the next: a wait first
 * sleeps for most of the shorter of them, then asks the GPU. The first two waits of a site only measure
 * (the first includes shader compiles). A wait that finds the work already done when it asks slept too long,
 * so its estimate is halved.
 */
export class PacedWait {
  private readonly samples = new Map<string, number[]>();

  constructor(private readonly fraction = 0.9) {}

  /** `submitted` is when the awaited work was submitted (performance.now()); `wait` issues the GPU wait. */
  async wait<T>(key: string, submitted: number, wait: () => Promise<T>): Promise<T> {
    const samples = this.samples.get(key) ?? [];
    let slept = false;
    if (samples.length === 2) {
      const remaining = Math.min(...samples) * this.fraction - (performance.now() - submitted);
      if (remaining >= 2) {
        await new Promise((resolve) => setTimeout(resolve, remaining));
        slept = true;
      }
    }
    const asked = performance.now();
    const result = await wait();
    const done = performance.now();
    const took = done - submitted;
    this.samples.set(key, [...samples, slept && done - asked < 1 ? took / 2 : took].slice(-2));
    return result;
  }
}
