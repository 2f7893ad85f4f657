/**
 * A GPU that heats like a first-order system: it approaches ambient + rise x duty cycle with time constant
 * tau. Drives the thermal tests and demos with an injected clock.
 */
export interface SimulatedGpuOptions {
  ambientC?: number;
  /** Temperature rise above ambient at 100% duty cycle, in steady state. */
  fullLoadRiseC?: number;
  tauSeconds?: number;
}

export class SimulatedGpuSensor {
  private tempC: number;
  private readonly ambientC: number;
  private readonly riseC: number;
  private readonly tauS: number;

  constructor(options: SimulatedGpuOptions = {}) {
    this.ambientC = options.ambientC ?? 35;
    this.riseC = options.fullLoadRiseC ?? 60;
    this.tauS = options.tauSeconds ?? 20;
    this.tempC = this.ambientC;
  }

  /** Advances the model by `seconds` at the given duty cycle (0..1). */
  advance(seconds: number, dutyCycle: number): void {
    const target = this.ambientC + this.riseC * Math.min(1, Math.max(0, dutyCycle));
    this.tempC = target + (this.tempC - target) * Math.exp(-seconds / this.tauS);
  }

  get temperatureC(): number {
    return this.tempC;
  }
}
