import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../main/agent/agent.js';
import { SimulatedGpuSensor, type SimulatedGpuOptions } from '../../main/agent/telemetry/simulated.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { FakeClock } from './fake-clock.js';
import { openQuietAgent } from '../helpers/agent.js';

interface Trace {
  temps: number[];
  states: string[];
  duty: number[];
}

/** The agent's control loop against a simulated GPU, one reading and one tick per simulated second. */
class Simulation {
  private constructor(
    readonly agent: Agent,
    readonly sensor: SimulatedGpuSensor,
    readonly clock: FakeClock,
  ) {}

  static async start(dir: string, options: SimulatedGpuOptions, startC?: number): Promise<Simulation> {
    const clock = new FakeClock();
    const agent = await openQuietAgent({
      dataDir: dir,
      clock,
      settings: { ...defaultSettings, runWhen: 'always' },
    });
    const sensor = new SimulatedGpuSensor(options);
    // Start from the steady state of whatever load brought the GPU to startC (a game, say).
    if (startC !== undefined)
      sensor.advance(1e6, (startC - (options.ambientC ?? 35)) / (options.fullLoadRiseC ?? 60));
    return new Simulation(agent, sensor, clock);
  }

  run(seconds: number): Trace {
    const trace: Trace = { temps: [], states: [], duty: [] };
    for (let t = 0; t < seconds; t++) {
      const reading = {
        index: 0,
        tempC: this.sensor.temperatureC,
        utilPct: null,
        powerW: null,
        memUsedMb: null,
        memTotalMb: null,
      };
      this.agent.telemetry.report(reading, 'simulated');
      this.agent.tick();
      const snap = this.agent.snapshot();
      trace.states.push(snap.state);
      trace.duty.push(snap.dutyCyclePct / 100);
      this.sensor.advance(1, snap.dutyCyclePct / 100);
      this.clock.advance(1000);
      trace.temps.push(this.sensor.temperatureC);
    }
    return trace;
  }
}

const spread = (values: number[]): number => Math.max(...values) - Math.min(...values);

describe('temperature control with a simulated GPU', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tributary-thermal-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const limit = defaultSettings.gpuTempLimitC;

  const coolers: [string, SimulatedGpuOptions][] = [
    ['a GPU that would reach 95 °C flat out', { ambientC: 35, fullLoadRiseC: 60, tauSeconds: 20 }],
    ['a hot case with a slow cooler', { ambientC: 45, fullLoadRiseC: 70, tauSeconds: 60 }],
    ['a fast-heating small cooler', { ambientC: 30, fullLoadRiseC: 90, tauSeconds: 10 }],
  ];
  for (const [name, options] of coolers) {
    it(`${name}: stays within limit + 1 °C and settles just under the limit`, async () => {
      const sim = await Simulation.start(dir, options);
      const { temps, duty } = sim.run(1200);
      expect(Math.max(...temps)).toBeLessThanOrEqual(limit + 1);
      expect(spread(temps.slice(-300))).toBeLessThan(0.5);
      expect(Math.min(...temps.slice(-300))).toBeGreaterThan(limit - 3);
      expect(spread(duty.slice(-300))).toBeLessThan(0.02);
      expect(sim.agent.snapshot().reason).toMatch(
        /^Contributing, slowed to \d+%: GPU at 7\d °C, near your 80 °C limit$/,
      );
      await sim.agent.stop();
    });
  }

  it('a GPU already hot from a game waits until it cools below the resume point, then settles', async () => {
    const sim = await Simulation.start(dir, { ambientC: 35, fullLoadRiseC: 60, tauSeconds: 20 }, 90);
    const { temps, states } = sim.run(900);
    expect(states[0]).toBe('waiting');
    const firstRun = states.indexOf('running');
    expect(temps[firstRun - 1]).toBeLessThanOrEqual(limit - defaultSettings.tempResumeBelowC);
    expect(Math.max(...temps.slice(firstRun))).toBeLessThanOrEqual(limit + 1);
    expect(states.slice(firstRun).every((s) => s === 'running')).toBe(true);
    await sim.agent.stop();
  });

  it('follows a lowered limit', async () => {
    const sim = await Simulation.start(dir, { ambientC: 35, fullLoadRiseC: 60, tauSeconds: 20 });
    expect(sim.run(600).temps.at(-1)).toBeGreaterThan(limit - 3);
    expect((await sim.agent.command({ type: 'updateSettings', patch: { gpuTempLimitC: 65 } })).ok).toBe(true);
    const tail = sim.run(900).temps.slice(-200);
    expect(Math.max(...tail)).toBeLessThanOrEqual(66);
    expect(Math.min(...tail)).toBeGreaterThan(62);
    await sim.agent.stop();
  });
});
