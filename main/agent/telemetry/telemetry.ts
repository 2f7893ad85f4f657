import type { TelemetrySnapshot, ThermalState } from '../../../shared/dashboard/contract.js';
import type { Clock } from '../clock.js';
import { AmdSysfsSource } from './amd-sysfs.js';
import { readCpuTempC, readMacThermalState } from './host-sensors.js';
import { NvidiaSmiSource } from './nvidia-smi.js';
import type { GpuReading, TelemetrySource } from './types.js';

export interface TelemetryOptions {
  clock: Clock;
  /** GPU sources; by default nvidia-smi everywhere plus amdgpu sysfs on Linux. */
  sources?: TelemetrySource[];
  /** Readings older than this are treated as missing. */
  staleMs?: number;
  /** How often to read the OS thermal state and CPU temperature. */
  hostPollMs?: number;
  /** Host sensors (CPU temperature, macOS thermal state); tests pass none. */
  hostSensors?: boolean;
}

export function defaultGpuSources(): TelemetrySource[] {
  return process.platform === 'linux'
    ? [new NvidiaSmiSource(), new AmdSysfsSource()]
    : [new NvidiaSmiSource()];
}

/**
 * The latest readings from every source, kept in memory; nothing here blocks. The GPU that matters for the
 * temperature limit is the hottest one reporting.
 */
export class Telemetry {
  private readonly sources: TelemetrySource[];
  private readonly gpus = new Map<string, { reading: GpuReading; at: number; source: string }>();
  private cpuTempC: number | null = null;
  private thermalState: ThermalState = 'unknown';
  private hostTimer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly options: TelemetryOptions) {
    this.sources = options.sources ?? defaultGpuSources();
  }

  start(): void {
    for (const source of this.sources) source.start((reading) => this.report(reading, source.name));
    if (this.options.hostSensors ?? true) {
      const poll = async (): Promise<void> => {
        this.cpuTempC = await readCpuTempC();
        if (process.platform === 'darwin') this.setThermalState(await readMacThermalState());
      };
      void poll();
      this.hostTimer = setInterval(() => void poll(), this.options.hostPollMs ?? 5000);
      this.hostTimer.unref();
    }
  }

  stop(): void {
    for (const source of this.sources) source.stop();
    if (this.hostTimer) clearInterval(this.hostTimer);
    this.hostTimer = null;
  }

  /** Any source (or a test, or the Electron shell) reports a GPU reading here. */
  report(reading: GpuReading, source: string): void {
    this.gpus.set(`${source}:${reading.index}`, { reading, at: this.options.clock.now(), source });
    for (const listener of this.listeners) listener();
  }

  /** Electron's powerMonitor.getCurrentThermalState() feeds this on macOS. */
  setThermalState(state: ThermalState): void {
    this.thermalState = state;
  }

  onReading(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  snapshot(): TelemetrySnapshot {
    const now = this.options.clock.now();
    const fresh = [...this.gpus.values()].filter((g) => now - g.at <= (this.options.staleMs ?? 5000));
    const hottest = fresh.reduce<(typeof fresh)[number] | null>(
      (best, g) =>
        best === null || (g.reading.tempC ?? -Infinity) > (best.reading.tempC ?? -Infinity) ? g : best,
      null,
    );
    const r = hottest?.reading;
    return {
      gpuTempC: r?.tempC ?? null,
      gpuUtilPct: r?.utilPct ?? null,
      gpuPowerW: r?.powerW ?? null,
      vramUsedMb: r?.memUsedMb ?? null,
      vramTotalMb: r?.memTotalMb ?? null,
      cpuTempC: this.cpuTempC,
      thermalState: this.thermalState,
      source: hottest?.source ?? 'none',
    };
  }
}
