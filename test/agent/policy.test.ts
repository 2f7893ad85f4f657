import { describe, expect, it } from 'vitest';
import { neutralInputs, Policy, type PolicyInputs } from '../../main/agent/policy.js';
import {
  applySettingsPatch,
  defaultSettings,
  parseSettings,
  type AgentSettings,
} from '../../shared/dashboard/settings.js';

const T0 = new Date(2026, 10, 25, 14, 0, 0).getTime();
const idle = (seconds: number): Partial<PolicyInputs> => ({ idleSeconds: seconds });

function policy(patch: Partial<AgentSettings> = {}): Policy {
  return new Policy({ ...defaultSettings, ...patch });
}

function evalAt(p: Policy, inputs: Partial<PolicyInputs>, atSeconds = 0): ReturnType<Policy['evaluate']> {
  return p.evaluate({ ...neutralInputs, idleSeconds: 600, ...inputs }, T0 + atSeconds * 1000);
}

describe('settings', () => {
  it('has the documented defaults', () => {
    expect(defaultSettings).toMatchObject({
      runWhen: 'idle',
      idleAfterSeconds: 180,
      pauseOnBattery: true,
      gpuTempLimitC: 80,
      dutyCyclePct: 100,
      schedule: [],
      vramCapMb: null,
    });
  });

  it('fills keys missing from an older settings file with defaults', () => {
    expect(parseSettings({ dutyCyclePct: 40 })).toEqual({
      ok: true,
      settings: { ...defaultSettings, dutyCyclePct: 40 },
    });
  });

  it('explains every mistake with its path', () => {
    const result = parseSettings({
      ...defaultSettings,
      dutyCyclePct: 150,
      schedule: [{ start: '25:00', end: '08:00' }],
      colour: 'red',
    });
    expect(result).toEqual({
      ok: false,
      errors: [
        'settings: unknown setting "colour"',
        'dutyCyclePct: the GPU load cap is a percentage: at most 100',
        'schedule.0.start: use 24-hour time like "22:30"',
      ].sort(),
    });
  });

  it('applies a valid patch and refuses an invalid one without changing anything', () => {
    const current: AgentSettings = { ...defaultSettings, runWhen: 'always', dutyCyclePct: 60 };
    expect(applySettingsPatch(current, { gpuTempLimitC: 75 })).toEqual({
      ok: true,
      settings: { ...current, gpuTempLimitC: 75 },
    });
    expect(applySettingsPatch(defaultSettings, { idleAfterSeconds: 2 })).toEqual({
      ok: false,
      errors: ['idleAfterSeconds: idle time must be at least 10 seconds'],
    });
  });
});

describe('policy decisions', () => {
  const cases: {
    name: string;
    settings?: Partial<AgentSettings>;
    inputs: Partial<PolicyInputs>;
    state: string;
    code: string;
    reason: RegExp;
    duty?: number;
  }[] = [
    {
      name: 'idle long enough',
      inputs: idle(200),
      state: 'running',
      code: 'running',
      reason: /^Contributing$/,
      duty: 1,
    },
    {
      name: 'recent input',
      inputs: idle(40),
      state: 'waiting',
      code: 'not-idle',
      reason: /^Waiting: you used the computer 40 s ago; contributes after 3 min idle$/,
    },
    {
      name: 'screen locked counts as away',
      inputs: { ...idle(5), screenLocked: true },
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'no idle signal',
      inputs: { idleSeconds: null },
      state: 'waiting',
      code: 'not-idle',
      reason: /does not report idle time/,
    },
    {
      name: 'headless always',
      settings: { runWhen: 'always' },
      inputs: { idleSeconds: null },
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'on battery',
      inputs: { onBattery: true },
      state: 'waiting',
      code: 'on-battery',
      reason: /on battery power; contributes when plugged in/,
    },
    {
      name: 'on battery allowed',
      settings: { pauseOnBattery: false },
      inputs: { onBattery: true },
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'duty cycle cap',
      settings: { dutyCyclePct: 50 },
      inputs: {},
      state: 'running',
      code: 'running',
      reason: /at 50% \(your GPU load cap\)/,
      duty: 0.5,
    },
    {
      name: 'OS fair heat halves',
      inputs: { thermalState: 'fair' },
      state: 'running',
      code: 'running',
      reason: /fair heat/,
      duty: 0.5,
    },
    {
      name: 'OS serious heat',
      inputs: { thermalState: 'serious' },
      state: 'waiting',
      code: 'os-thermal',
      reason: /serious heat/,
    },
    {
      name: 'GPU over limit + margin',
      inputs: { gpuTempC: 84 },
      state: 'waiting',
      code: 'gpu-hot',
      reason: /^Cooling down: GPU at 84 °C, over your 80 °C limit; resumes below 77 °C$/,
    },
    {
      name: 'GPU near limit still runs',
      inputs: { gpuTempC: 82 },
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'listed program',
      settings: { pausePrograms: ['steam'] },
      inputs: { runningPrograms: ['bash', 'Steam'] },
      state: 'waiting',
      code: 'program-running',
      reason: /Steam is running/,
    },
    {
      name: 'stage over VRAM cap',
      settings: { vramCapMb: 2000 },
      inputs: { stageMemoryBytes: 3.2e9 },
      state: 'paused',
      code: 'vram-cap',
      reason: /needs 3.2 GB of GPU memory, above your 2.0 GB limit/,
    },
    {
      name: 'stage within VRAM cap',
      settings: { vramCapMb: 4000 },
      inputs: { stageMemoryBytes: 3.2e9 },
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'inside schedule',
      settings: { schedule: [{ days: [0, 1, 2, 3, 4, 5, 6], start: '13:00', end: '15:00' }] },
      inputs: {},
      state: 'running',
      code: 'running',
      reason: /Contributing/,
    },
    {
      name: 'outside schedule',
      settings: { schedule: [{ days: [0, 1, 2, 3, 4, 5, 6], start: '22:00', end: '07:00' }] },
      inputs: {},
      state: 'waiting',
      code: 'schedule',
      reason: /outside your contribution hours; next window starts 22:00/,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const d = evalAt(policy(c.settings), c.inputs);
      expect(d.state).toBe(c.state);
      expect(d.reasonCode).toBe(c.code);
      expect(d.reason).toMatch(c.reason);
      expect(d.dutyCycle).toBe(c.duty ?? (c.state === 'running' ? 1 : 0));
    });
  }

  it('handles windows past midnight on the day they start', () => {
    const p = policy({ schedule: [{ days: [3], start: '22:00', end: '07:00' }] });
    // 2026-11-25 is a Wednesday (3); 02:00 on Thursday still belongs to Wednesday's window.
    expect(
      p.evaluate({ ...neutralInputs, idleSeconds: 600 }, new Date(2026, 10, 26, 2, 0).getTime()).state,
    ).toBe('running');
    expect(
      p.evaluate({ ...neutralInputs, idleSeconds: 600 }, new Date(2026, 10, 27, 2, 0).getTime()).state,
    ).toBe('waiting');
  });
});

describe('user pause', () => {
  it('pauses for an hour, until tomorrow 06:00, or until resumed', () => {
    const p = policy();
    p.pause('1h', T0);
    expect(evalAt(p, {}, 0)).toMatchObject({
      state: 'paused',
      reason: 'Paused by you until 15:00',
      resumeAt: T0 + 3_600_000,
    });
    expect(evalAt(p, {}, 3599).state).toBe('paused');
    expect(evalAt(p, {}, 3600).state).toBe('running');

    p.pause('tomorrow', T0);
    const tomorrow = new Date(2026, 10, 26, 6, 0).getTime();
    expect(evalAt(p, {}, 60)).toMatchObject({
      state: 'paused',
      reason: 'Paused by you until Thu 06:00',
      resumeAt: tomorrow,
    });

    p.pause('indefinitely', T0);
    expect(evalAt(p, {}, 86_400 * 3)).toMatchObject({
      state: 'paused',
      reason: 'Paused by you',
      resumeAt: null,
    });
    p.resume();
    expect(evalAt(p, {}, 86_400 * 3).state).toBe('running');
  });
});

describe('hysteresis: flapping inputs do not flap the state', () => {
  /** Feeds one input per second; returns how many times the state changed. */
  function transitions(p: Policy, inputs: Partial<PolicyInputs>[]): { changes: number; states: string[] } {
    const states = inputs.map((input, t) => evalAt(p, input, t).state);
    return { changes: states.filter((s, i) => i > 0 && s !== states[i - 1]).length, states };
  }

  it('GPU temperature wobbling around the stop threshold stops once and resumes once', () => {
    const temps = [80, 82, 83.2, 82.8, 83.1, 81, 82.9, 79, 78, 77.5, 78, 77, 78, 76];
    const { changes, states } = transitions(
      policy(),
      temps.map((gpuTempC) => ({ gpuTempC })),
    );
    expect(changes).toBe(2);
    expect(states.slice(2, 11).every((s) => s === 'waiting')).toBe(true);
    expect(states.at(-3)).toBe('running');
  });

  it('a charger that flickers keeps work off until it has stayed plugged in for 30 s', () => {
    const flicker = Array.from({ length: 20 }, (_, i) => ({ onBattery: i % 3 === 0 }));
    const steady = Array.from({ length: 40 }, () => ({ onBattery: false }));
    const { changes, states } = transitions(policy(), [...flicker, ...steady]);
    expect(changes).toBe(1);
    expect(states.indexOf('running')).toBe(18 + 30);
  });

  it('a game launcher that respawns keeps work off until gone for 30 s', () => {
    const p = policy({ pausePrograms: ['steam'] });
    const seq = Array.from({ length: 60 }, (_, i) => ({
      runningPrograms: i < 20 && i % 4 !== 1 ? ['steam'] : [],
    }));
    const { changes, states } = transitions(p, seq);
    expect(changes).toBe(1);
    expect(evalAt(p, { runningPrograms: [] }, 35).reason).toMatch(
      /^Waiting: steam closed; resumes in \d+ s$/,
    );
    expect(states.indexOf('running')).toBe(19 + 30);
  });

  it('OS thermal state flicking between fair and serious waits 60 s of calm', () => {
    const seq = Array.from({ length: 100 }, (_, i) => ({
      thermalState: (i < 30 && i % 2 === 0 ? 'serious' : 'fair') as PolicyInputs['thermalState'],
    }));
    const { changes, states } = transitions(policy(), seq);
    expect(changes).toBe(1);
    expect(states.indexOf('running')).toBe(28 + 60);
  });

  it('a bumped mouse does not stop running work; real use does', () => {
    const p = policy();
    expect(evalAt(p, idle(200), 0).state).toBe('running');
    expect(evalAt(p, idle(170), 1).state).toBe('running');
    expect(evalAt(p, idle(2), 2).state).toBe('waiting');
    expect(evalAt(p, idle(170), 170).state).toBe('waiting');
    expect(evalAt(p, idle(180), 180).state).toBe('running');
  });
});
