import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listProcessNames, parseProcessList } from '../../main/agent/host-signals.js';
import { readAmdSysfs } from '../../main/agent/telemetry/amd-sysfs.js';
import { parsePmsetTherm, readCpuTempC } from '../../main/agent/telemetry/host-sensors.js';
import { readInventory } from '../../main/agent/telemetry/inventory.js';
import { NvidiaSmiSource, parseNvidiaSmiLine } from '../../main/agent/telemetry/nvidia-smi.js';
import { Telemetry } from '../../main/agent/telemetry/telemetry.js';
import type { GpuReading } from '../../main/agent/telemetry/types.js';
import { FakeClock } from './fake-clock.js';

const dir = mkdtempSync(join(tmpdir(), 'tributary-telemetry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('nvidia-smi', () => {
  it('parses recorded lines, including missing sensors', () => {
    expect(parseNvidiaSmiLine('0, 64, 97, 215.32, 7301, 24564')).toEqual({
      index: 0,
      tempC: 64,
      utilPct: 97,
      powerW: 215.32,
      memUsedMb: 7301,
      memTotalMb: 24564,
    });
    // Laptop GPUs often report no power draw.
    expect(parseNvidiaSmiLine('1, 51, 3, [N/A], 512, 8192')).toMatchObject({
      index: 1,
      powerW: null,
      tempC: 51,
    });
    expect(parseNvidiaSmiLine('0, [Not Supported], 0, [N/A], 0, 4096')).toMatchObject({
      tempC: null,
      powerW: null,
    });
    for (const bad of [
      '',
      'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.',
      '0, 64, 97',
      'x, 1, 2, 3, 4, 5',
    ]) {
      expect(parseNvidiaSmiLine(bad)).toBeNull();
    }
  });

  it('streams readings from a long-running child (a fake nvidia-smi on PATH) and stops it', async () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const argsFile = join(dir, 'args.txt');
    writeFileSync(
      join(bin, 'nvidia-smi'),
      `#!/bin/sh\necho "$@" > ${argsFile}\nt=60\nwhile true; do\n  echo "0, $t, 99, 250.5, 8000, 24564"\n  echo "1, 40, 0, [N/A], 10, 8192"\n  t=$((t+1))\n  sleep 0.05\ndone\n`,
    );
    chmodSync(join(bin, 'nvidia-smi'), 0o755);
    const originalPath = process.env.PATH;
    process.env.PATH = `${bin}:${originalPath}`;
    const source = new NvidiaSmiSource({ intervalMs: 50 });
    const readings: GpuReading[] = [];
    try {
      await new Promise<void>((resolve) => {
        source.start((r) => {
          readings.push(r);
          if (readings.length >= 6) resolve();
        });
      });
    } finally {
      source.stop();
      process.env.PATH = originalPath;
    }
    const gpu0 = readings.filter((r) => r.index === 0).map((r) => r.tempC);
    expect(gpu0.slice(0, 3)).toEqual([60, 61, 62]);
    expect(readings.find((r) => r.index === 1)).toMatchObject({ tempC: 40, powerW: null, memTotalMb: 8192 });
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(argsFile, 'utf8').trim()).toBe(
      '--query-gpu=index,temperature.gpu,utilization.gpu,power.draw,memory.used,memory.total --format=csv,noheader,nounits -lms 50',
    );
  });

  it('reports nothing, and does not throw, where nvidia-smi is missing', async () => {
    const errors: string[] = [];
    const source = new NvidiaSmiSource({
      command: join(dir, 'no-such-nvidia-smi'),
      onError: (m) => errors.push(m),
    });
    const readings: GpuReading[] = [];
    source.start((r) => readings.push(r));
    await new Promise((r) => setTimeout(r, 200));
    source.stop();
    expect(readings).toEqual([]);
    expect(errors[0]).toMatch(/nvidia-smi unavailable: spawn .* ENOENT/);
  });
});

describe('amdgpu sysfs', () => {
  it('reads temperature (milli-°C), power (µW), memory and load from a fake sysfs root', async () => {
    const root = join(dir, 'drm');
    const card = (n: number, vendor: string, files: Record<string, string>): void => {
      const hwmon = join(root, `card${n}`, 'device', 'hwmon', `hwmon${n + 3}`);
      mkdirSync(hwmon, { recursive: true });
      writeFileSync(join(root, `card${n}`, 'device', 'vendor'), `${vendor}\n`);
      for (const [name, value] of Object.entries(files)) {
        const path = name.startsWith('hwmon/')
          ? join(hwmon, name.slice(6))
          : join(root, `card${n}`, 'device', name);
        writeFileSync(path, `${value}\n`);
      }
    };
    card(0, '0x8086', { 'hwmon/temp1_input': '45000' });
    card(1, '0x1002', {
      'hwmon/temp1_input': '71500',
      'hwmon/power1_average': '187000000',
      mem_info_vram_used: '2147483648',
      mem_info_vram_total: '17163091968',
      gpu_busy_percent: '88',
    });
    card(2, '0x1002', { 'hwmon/temp1_input': '39000' });
    mkdirSync(join(root, 'card1-DP-1'), { recursive: true });
    expect(await readAmdSysfs(root)).toEqual([
      { index: 1, tempC: 71.5, utilPct: 88, powerW: 187, memUsedMb: 2147.483648, memTotalMb: 17163.091968 },
      { index: 2, tempC: 39, utilPct: null, powerW: null, memUsedMb: null, memTotalMb: null },
    ]);
    expect(await readAmdSysfs(join(dir, 'missing'))).toEqual([]);
  });
});

describe('host sensors', () => {
  it('maps `pmset -g therm` output to a thermal state', () => {
    expect(
      parsePmsetTherm(
        'Note: No thermal warning level has been recorded\nNote: No performance warning level has been recorded\n',
      ),
    ).toBe('nominal');
    expect(
      parsePmsetTherm(
        '2026-11-25 CPU Power notify\n\tCPU_Scheduler_Limit \t= 100\n\tCPU_Available_CPUs \t= 8\n\tCPU_Speed_Limit \t= 100\n',
      ),
    ).toBe('nominal');
    expect(parsePmsetTherm('\tCPU_Speed_Limit \t= 90\n')).toBe('fair');
    expect(parsePmsetTherm('\tCPU_Speed_Limit \t= 70\n')).toBe('serious');
    expect(parsePmsetTherm('\tCPU_Speed_Limit \t= 35\n')).toBe('critical');
    expect(parsePmsetTherm('Thermal warning level set to 2.\n')).toBe('serious');
    expect(parsePmsetTherm('pmset: unknown option')).toBe('unknown');
  });

  it('finds the CPU package temperature among thermal zones', async () => {
    const sys = join(dir, 'sys-class');
    for (const [zone, type, temp] of [
      ['thermal_zone0', 'acpitz', '27800'],
      ['thermal_zone1', 'x86_pkg_temp', '55000'],
    ]) {
      mkdirSync(join(sys, 'thermal', zone!), { recursive: true });
      writeFileSync(join(sys, 'thermal', zone!, 'type'), `${type}\n`);
      writeFileSync(join(sys, 'thermal', zone!, 'temp'), `${temp}\n`);
    }
    expect(await readCpuTempC(sys)).toBe(55);
    expect(await readCpuTempC(join(dir, 'nothing'))).toBeNull();
  });
});

describe('telemetry hub', () => {
  it('reports the hottest fresh GPU and forgets stale readings', () => {
    const clock = new FakeClock();
    const telemetry = new Telemetry({ clock, sources: [], hostSensors: false, staleMs: 5000 });
    const reading = (index: number, tempC: number): GpuReading => ({
      index,
      tempC,
      utilPct: 50,
      powerW: 100,
      memUsedMb: 1,
      memTotalMb: 2,
    });
    expect(telemetry.snapshot()).toMatchObject({ gpuTempC: null, source: 'none' });
    telemetry.report(reading(0, 60), 'nvidia-smi');
    telemetry.report(reading(1, 72), 'nvidia-smi');
    expect(telemetry.snapshot()).toMatchObject({ gpuTempC: 72, source: 'nvidia-smi', vramTotalMb: 2 });
    clock.advance(3000);
    telemetry.report(reading(0, 61), 'nvidia-smi');
    clock.advance(3000);
    expect(telemetry.snapshot().gpuTempC).toBe(61);
    clock.advance(6000);
    expect(telemetry.snapshot().gpuTempC).toBeNull();
  });
});

describe('host inventory and programs', () => {
  it('reads the machine inventory once through systeminformation', async () => {
    const inventory = await readInventory();
    expect(inventory.cores).toBeGreaterThan(0);
    expect(inventory.memoryMb).toBeGreaterThan(100);
    expect(Array.isArray(inventory.gpus)).toBe(true);
  });

  it('lists running programs by name (this test runner among them)', async () => {
    expect(await listProcessNames()).toContain('node');
    expect(parseProcessList('/usr/bin/steam\nbash\n\nbash\n', false)).toEqual(['steam', 'bash']);
    expect(
      parseProcessList(
        '"Steam.exe","1234","Console","1","50,000 K"\r\n"Code.exe","99","Console","1","9 K"\r\n',
        true,
      ),
    ).toEqual(['Steam.exe', 'Code.exe']);
  });
});
