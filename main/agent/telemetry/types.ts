import type { ThermalState } from '../../../shared/dashboard/contract.js';

/** One GPU's readings at one moment; null where the source has no such sensor. */
export interface GpuReading {
  index: number;
  tempC: number | null;
  utilPct: number | null;
  powerW: number | null;
  memUsedMb: number | null;
  memTotalMb: number | null;
}

/** A source of readings that polls without blocking the event loop. */
export interface TelemetrySource {
  readonly name: string;
  start(onReading: (reading: GpuReading) => void): void;
  stop(): void;
}

export type { ThermalState };
