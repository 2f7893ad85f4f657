import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../main/agent/agent.js';
import { SimulatedGpuSensor, type SimulatedGpuOptions } from '../../main/agent/telemetry/simulated.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { FakeClock } from './fake-clock.js';

describe('temperature control with a simulated GPU', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tributary-thermal-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs the agent's control loop once a second for `seconds`; returns the temperatures and states seen. */
  async function run(
    seconds: number,
    sensorOptions: SimulatedGpuOptions,
    settings = defaultSettings,
    startC?: number,
  ): Promise<{
    temps: number[];
    states: string[];
    duty: number[];
    agent: Agent;
    sensor: SimulatedGpuSensor;
    clock: FakeClock;
  }> {
    const clock = new FakeClock();
    const agent = await Agent.open({
      dataDir: dir,
      clock,
      settings: { ...settings, runWhen: 'always' },
      telemetrySources: [],
      hostSensors: false,
      tickMs: 0,
      pollHost: false,
    });
    const sensor = new SimulatedGpuSensor(sensorOptions);
    if (startC !== undefined)
      sensor.advance(1e6, (startC - (sensorOptions.ambientC ?? 35)) / (sensorOptions.fullLoadRiseC ?? 60));
    const temps: number[] = [];
    const states: string[] = [];
    const duty: number[] = [];
    for (let t = 0; t < seconds; t++) {
      agent.telemetry.report(
        {
          index: 0,
          tempC: sensor.temperatureC,
          utilPct: null,
          powerW: null,
          memUsedMb: null,
          memTotalMb: null,
        },
        'simulated',
      );
      agent.tick();
      const snap = agent.snapshot();
      states.push(snap.state);
      duty.push(snap.dutyCyclePct / 100);
      sensor.advance(1, snap.dutyCyclePct / 100);
      clock.advance(1000);
      temps.push(sensor.temperatureC);
    }
    return { temps, states, duty, agent, sensor, clock };
  }

  const coolers: [string, SimulatedGpuOptions][] = [
    ['a GPU that would reach 95 °C flat out', { ambientC: 35, fullLoadRiseC: 60, tauSeconds: 20 }],
    ['a hot case with a slow cooler', { ambientC: 45, fullLoadRiseC: 70, tauSeconds: 60 }],
    ['a fast-heating small cooler', { ambientC: 30, fullLoadRiseC: 90, tauSeconds: 10 }],
  ];
  for (const [name, options] of coolers) {
    it(`${name}: stays within limit + 1 °C and settles just under the limit`, async () => {
      const { temps, duty, agent } = await run(1200, options);
      const limit = defaultSettings.gpuTempLimitC;
      expect(Math.max(...temps)).toBeLessThanOrEqual(limit + 1);
      const tail = temps.slice(-300);
      expect(Math.max(...tail) - Math.min(...tail)).toBeLessThan(0.5);
      expect(Math.min(...tail)).toBeGreaterThan(limit - 3);
      const tailDuty = duty.slice(-300);
      expect(Math.max(...tailDuty) - Math.min(...tailDuty)).toBeLessThan(0.02);
      expect(agent.snapshot().reason).toMatch(
        /^Contributing, slowed to \d+%: GPU at 7\d °C, near your 80 °C limit$/,
      );
      await agent.stop();
    });
  }

  it('a GPU already hot from a game waits until it cools below the resume point, then settles', async () => {
    const { temps, states, agent } = await run(
      900,
      { ambientC: 35, fullLoadRiseC: 60, tauSeconds: 20 },
      defaultSettings,
      90,
    );
    expect(states[0]).toBe('waiting');
    const firstRun = states.indexOf('running');
    expect(temps[firstRun - 1]).toBeLessThanOrEqual(77);
    expect(Math.max(...temps.slice(firstRun))).toBeLessThanOrEqual(81);
    expect(states.slice(firstRun).every((s) => s === 'running')).toBe(true);
    await agent.stop();
  });

  it('follows a lowered limit', async () => {
    const { temps, agent, sensor, clock } = await run(600, {
      ambientC: 35,
      fullLoadRiseC: 60,
      tauSeconds: 20,
    });
    expect(temps.at(-1)).toBeGreaterThan(77);
    expect((await agent.command({ type: 'updateSettings', patch: { gpuTempLimitC: 65 } })).ok).toBe(true);
    const after: number[] = [];
    for (let t = 0; t < 900; t++) {
      agent.telemetry.report(
        {
          index: 0,
          tempC: sensor.temperatureC,
          utilPct: null,
          powerW: null,
          memUsedMb: null,
          memTotalMb: null,
        },
        'simulated',
      );
      agent.tick();
      sensor.advance(1, agent.snapshot().dutyCyclePct / 100);
      clock.advance(1000);
      after.push(sensor.temperatureC);
    }
    const tail = after.slice(-200);
    expect(Math.max(...tail)).toBeLessThanOrEqual(66);
    expect(Math.min(...tail)).toBeGreaterThan(62);
    await agent.stop();
  });
});
