import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { GpuReading, TelemetrySource } from './types.js';

export const NVIDIA_SMI_FIELDS = 'index,temperature.gpu,utilization.gpu,power.draw,memory.used,memory.total';

export function nvidiaSmiArgs(intervalMs: number): string[] {
  return [`--query-gpu=${NVIDIA_SMI_FIELDS}`, '--format=csv,noheader,nounits', `-lms`, String(intervalMs)];
}

/** "0, 65, 87, 213.45, 4021, 24564" -> a reading; "[N/A]" fields become null; anything else malformed -> null. */
export function parseNvidiaSmiLine(line: string): GpuReading | null {
  const cells = line.split(',').map((c) => c.trim());
  if (cells.length !== 6) return null;
  const values = cells.map(parseCell);
  if (values.some((v) => v === undefined)) return null;
  const [index, tempC, utilPct, powerW, memUsedMb, memTotalMb] = values as (number | null)[];
  if (index === null || index === undefined || !Number.isInteger(index)) return null;
  return {
    index,
    tempC: tempC ?? null,
    utilPct: utilPct ?? null,
    powerW: powerW ?? null,
    memUsedMb: memUsedMb ?? null,
    memTotalMb: memTotalMb ?? null,
  };
}

/** A number, null for the values nvidia-smi prints when a sensor is missing, undefined for garbage. */
function parseCell(cell: string): number | null | undefined {
  if (/^\[?(N\/A|Not Supported|Unknown Error|Insufficient Permissions)\]?$/i.test(cell)) return null;
  if (!/^-?\d+(\.\d+)?$/.test(cell)) return undefined;
  return Number(cell);
}

/**
 * One long-running `nvidia-smi -lms` child streaming a line per GPU per interval. A missing nvidia-smi is
 * not an error (most machines have none): the source just never reports. A child that dies after working is
 * restarted after `restartMs`.
 */
export class NvidiaSmiSource implements TelemetrySource {
  readonly name = 'nvidia-smi';
  private child: ChildProcess | null = null;
  private stopped = true;
  private restartTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly options: {
      command?: string;
      intervalMs?: number;
      restartMs?: number;
      onError?: (message: string) => void;
    } = {},
  ) {}

  start(onReading: (reading: GpuReading) => void): void {
    this.stopped = false;
    this.spawnChild(onReading);
  }

  private spawnChild(onReading: (reading: GpuReading) => void): void {
    const child = spawn(
      this.options.command ?? 'nvidia-smi',
      nvidiaSmiArgs(this.options.intervalMs ?? 1000),
      {
        stdio: ['ignore', 'pipe', 'ignore'],
        windowsHide: true,
      },
    );
    this.child = child;
    let worked = false;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const reading = parseNvidiaSmiLine(line);
      if (reading) {
        worked = true;
        onReading(reading);
      }
    });
    child.on('error', (err) => this.options.onError?.(`nvidia-smi unavailable: ${err.message}`));
    child.on('exit', () => {
      lines.close();
      if (this.child === child) this.child = null;
      if (!this.stopped && worked) {
        this.restartTimer = setTimeout(() => this.spawnChild(onReading), this.options.restartMs ?? 5000);
        this.restartTimer.unref();
      }
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.kill();
    this.child = null;
  }
}
