import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GpuReading, TelemetrySource } from './types.js';

const AMD_VENDOR = '0x1002';

async function readNumber(path: string): Promise<number | null> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch {
    return [];
  }
}

/**
 * Reads AMD GPUs from the amdgpu driver's sysfs files (no admin rights needed):
 * card<N>/device/hwmon/hwmon<M>/temp1_input (milli-°C), power1_average (µW), and device/mem_info_vram_*,
 * gpu_busy_percent. `root` is /sys/class/drm on a real machine and a temp dir in tests.
 */
export async function readAmdSysfs(root = '/sys/class/drm'): Promise<GpuReading[]> {
  const cards = (await listDir(root)).filter((name) => /^card\d+$/.test(name));
  const readings: GpuReading[] = [];
  for (const card of cards.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))) {
    const device = join(root, card, 'device');
    const vendor = await readFile(join(device, 'vendor'), 'utf8').then(
      (v) => v.trim(),
      () => null,
    );
    if (vendor !== null && vendor !== AMD_VENDOR) continue;
    const hwmons = (await listDir(join(device, 'hwmon'))).filter((n) => /^hwmon\d+$/.test(n));
    const hwmon = hwmons[0] === undefined ? null : join(device, 'hwmon', hwmons[0]);
    if (hwmon === null) continue;
    const milliC = await readNumber(join(hwmon, 'temp1_input'));
    const microW = await readNumber(join(hwmon, 'power1_average'));
    const used = await readNumber(join(device, 'mem_info_vram_used'));
    const total = await readNumber(join(device, 'mem_info_vram_total'));
    readings.push({
      index: Number(card.slice(4)),
      tempC: milliC === null ? null : milliC / 1000,
      utilPct: await readNumber(join(device, 'gpu_busy_percent')),
      powerW: microW === null ? null : microW / 1e6,
      memUsedMb: used === null ? null : used / 1e6,
      memTotalMb: total === null ? null : total / 1e6,
    });
  }
  return readings;
}

/** Polls amdgpu sysfs every `intervalMs` with async reads, so a slow driver never blocks the event loop. */
export class AmdSysfsSource implements TelemetrySource {
  readonly name = 'amd-sysfs';
  private timer: NodeJS.Timeout | null = null;
  private busy = false;

  constructor(private readonly options: { root?: string; intervalMs?: number } = {}) {}

  start(onReading: (reading: GpuReading) => void): void {
    const poll = async (): Promise<void> => {
      if (this.busy) return;
      this.busy = true;
      try {
        for (const reading of await readAmdSysfs(this.options.root)) onReading(reading);
      } finally {
        this.busy = false;
      }
    };
    void poll();
    this.timer = setInterval(() => void poll(), this.options.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
