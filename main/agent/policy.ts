import type { PauseDuration, ReasonCode, AgentState, ThermalState } from '../../shared/dashboard/contract.js';
import type { AgentSettings, TimeWindow } from '../../shared/dashboard/settings.js';
import { formatBytes, formatDuration, formatWhen } from './format.js';

/** What the host (Electron shell, CLI, tests) observes; `null` where it cannot tell. */
export interface PolicyInputs {
  /** Seconds since the last keyboard or mouse input; null on hosts that cannot tell (headless). */
  idleSeconds: number | null;
  screenLocked: boolean;
  onBattery: boolean;
  thermalState: ThermalState;
  gpuTempC: number | null;
  /** Process names currently running (compared case-insensitively with settings.pausePrograms). */
  runningPrograms: readonly string[];
  /** Device memory the assigned stage needs; null before a stage is assigned. */
  stageMemoryBytes: number | null;
}

export const neutralInputs: PolicyInputs = {
  idleSeconds: null,
  screenLocked: false,
  onBattery: false,
  thermalState: 'unknown',
  gpuTempC: null,
  runningPrograms: [],
  stageMemoryBytes: null,
};

export interface PolicyDecision {
  state: AgentState;
  reasonCode: ReasonCode;
  reason: string;
  /** 0..1: the share of time the GPU may be busy. 0 whenever state is not 'running'. */
  dutyCycle: number;
  /** When a user pause ends (ms since epoch); null otherwise. */
  resumeAt: number | null;
}

/**
 * How long a condition must stay clear before work resumes. Each one is the "exit" side of a threshold, so
 * a signal that flickers (a charger that reconnects, a game launcher that respawns) cannot flap the state.
 */
export const RESUME_DWELL_S = { battery: 30, program: 30, osThermal: 60 } as const;
/** Hour (local) that "pause until tomorrow" ends. */
export const TOMORROW_HOUR = 6;

/**
 * Decides whether to contribute and how hard. Pure apart from its own hysteresis memory: every call takes
 * the time explicitly, so tests drive it with a fake clock.
 */
export class Policy {
  private settings: AgentSettings;
  private userPause: { until: number | null } | null = null;
  private running = false;
  private gpuHot = false;
  /** When each condition was last seen active, for the resume dwell. */
  private lastSeen = { battery: -Infinity, program: -Infinity, osThermal: -Infinity };
  private lastProgram = '';

  constructor(settings: AgentSettings) {
    this.settings = settings;
  }

  setSettings(settings: AgentSettings): void {
    this.settings = settings;
  }

  pause(duration: PauseDuration, now: number): void {
    this.userPause = { until: pauseEnd(duration, now) };
  }

  resume(): void {
    this.userPause = null;
  }

  evaluate(inputs: PolicyInputs, now: number): PolicyDecision {
    const decision = this.decide(inputs, now);
    this.running = decision.state === 'running';
    return decision;
  }

  private decide(inputs: PolicyInputs, now: number): PolicyDecision {
    const s = this.settings;
    this.track(inputs, now);

    if (this.userPause && this.userPause.until !== null && now >= this.userPause.until) this.userPause = null;
    if (this.userPause) {
      const until = this.userPause.until;
      const reason = until === null ? 'Paused by you' : `Paused by you until ${formatWhen(until, now)}`;
      return { ...stopped('paused', 'user-paused', reason), resumeAt: until };
    }

    if (
      s.vramCapMb !== null &&
      inputs.stageMemoryBytes !== null &&
      inputs.stageMemoryBytes > s.vramCapMb * 1e6
    ) {
      return stopped(
        'paused',
        'vram-cap',
        `Paused: this stage needs ${formatBytes(inputs.stageMemoryBytes)} of GPU memory, above your ` +
          `${formatBytes(s.vramCapMb * 1e6)} limit`,
      );
    }

    const hot = this.gpuHotNow(inputs.gpuTempC);
    if (hot) {
      return stopped(
        'waiting',
        'gpu-hot',
        `Cooling down: GPU at ${Math.round(inputs.gpuTempC ?? 0)} °C, over your ${s.gpuTempLimitC} °C limit; ` +
          `resumes below ${s.gpuTempLimitC - s.tempResumeBelowC} °C`,
      );
    }

    const thermalWait = this.dwellLeft('osThermal', now);
    if (thermalWait > 0) {
      const active = inputs.thermalState === 'serious' || inputs.thermalState === 'critical';
      return stopped(
        'waiting',
        'os-thermal',
        active
          ? `Waiting: the system reports ${inputs.thermalState} heat; contributes once it cools down`
          : `Waiting: the system has cooled down; resumes in ${formatDuration(thermalWait)}`,
      );
    }

    if (s.pauseOnBattery) {
      const wait = this.dwellLeft('battery', now);
      if (wait > 0) {
        return stopped(
          'waiting',
          'on-battery',
          inputs.onBattery
            ? 'Waiting: on battery power; contributes when plugged in'
            : `Waiting: plugged in; resumes in ${formatDuration(wait)}`,
        );
      }
    }

    if (s.schedule.length > 0 && !inSchedule(s.schedule, now)) {
      const next = nextWindowStart(s.schedule, now);
      const when = next === null ? '' : `; next window starts ${formatWhen(next, now)}`;
      return stopped('waiting', 'schedule', `Waiting: outside your contribution hours${when}`);
    }

    const programWait = this.dwellLeft('program', now);
    if (programWait > 0) {
      const running = matchingProgram(s.pausePrograms, inputs.runningPrograms);
      return stopped(
        'waiting',
        'program-running',
        running
          ? `Waiting: ${running} is running (on your pause list)`
          : `Waiting: ${this.lastProgram} closed; resumes in ${formatDuration(programWait)}`,
      );
    }

    if (s.runWhen === 'idle' && !inputs.screenLocked) {
      if (inputs.idleSeconds === null) {
        return stopped(
          'waiting',
          'not-idle',
          'Waiting: this computer does not report idle time; set "Run" to "always" to contribute anyway',
        );
      }
      // Once running, a little input (a bumped mouse reports a few idle seconds, not zero) does not stop work.
      const leaveBelow = Math.max(1, s.idleAfterSeconds - Math.min(30, s.idleAfterSeconds / 2));
      const idleEnough = this.running
        ? inputs.idleSeconds >= leaveBelow
        : inputs.idleSeconds >= s.idleAfterSeconds;
      if (!idleEnough) {
        return stopped(
          'waiting',
          'not-idle',
          `Waiting: you used the computer ${formatDuration(inputs.idleSeconds)} ago; contributes after ` +
            `${formatDuration(s.idleAfterSeconds)} idle`,
        );
      }
    }

    const thermalFactor = inputs.thermalState === 'fair' ? 0.5 : 1;
    const dutyCycle = (s.dutyCyclePct / 100) * thermalFactor;
    const reason =
      dutyCycle >= 1
        ? 'Contributing'
        : thermalFactor < 1
          ? `Contributing at ${Math.round(dutyCycle * 100)}%: the system reports fair heat`
          : `Contributing at ${s.dutyCyclePct}% (your GPU load cap)`;
    return { state: 'running', reasonCode: 'running', reason, dutyCycle, resumeAt: null };
  }

  private track(inputs: PolicyInputs, now: number): void {
    if (inputs.onBattery) this.lastSeen.battery = now;
    if (inputs.thermalState === 'serious' || inputs.thermalState === 'critical')
      this.lastSeen.osThermal = now;
    const program = matchingProgram(this.settings.pausePrograms, inputs.runningPrograms);
    if (program) {
      this.lastSeen.program = now;
      this.lastProgram = program;
    }
  }

  private dwellLeft(kind: keyof typeof RESUME_DWELL_S, now: number): number {
    return Math.max(0, RESUME_DWELL_S[kind] - (now - this.lastSeen[kind]) / 1000);
  }

  /** Stops at limit + margin, resumes only below limit - resumeBelow. No reading keeps the last verdict. */
  private gpuHotNow(tempC: number | null): boolean {
    const s = this.settings;
    if (tempC === null) return this.gpuHot;
    if (tempC >= s.gpuTempLimitC + s.tempStopMarginC) this.gpuHot = true;
    else if (tempC <= s.gpuTempLimitC - s.tempResumeBelowC) this.gpuHot = false;
    return this.gpuHot;
  }
}

function stopped(state: AgentState, reasonCode: ReasonCode, reason: string): PolicyDecision {
  return { state, reasonCode, reason, dutyCycle: 0, resumeAt: null };
}

function matchingProgram(pauseList: readonly string[], running: readonly string[]): string | null {
  if (pauseList.length === 0) return null;
  const wanted = new Set(pauseList.map((p) => p.toLowerCase()));
  return running.find((p) => wanted.has(p.toLowerCase())) ?? null;
}

export function pauseEnd(duration: PauseDuration, now: number): number | null {
  if (duration === 'indefinitely') return null;
  if (duration === '1h') return now + 3_600_000;
  const d = new Date(now);
  d.setDate(d.getDate() + 1);
  d.setHours(TOMORROW_HOUR, 0, 0, 0);
  return d.getTime();
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

/** Whether local time `now` falls in any window (windows past midnight belong to the day they start). */
export function inSchedule(windows: readonly TimeWindow[], now: number): boolean {
  const d = new Date(now);
  const minute = d.getHours() * 60 + d.getMinutes();
  const today = d.getDay();
  const yesterday = (today + 6) % 7;
  return windows.some((w) => {
    const start = minutesOf(w.start);
    const end = minutesOf(w.end);
    if (start < end) return w.days.includes(today) && minute >= start && minute < end;
    return (w.days.includes(today) && minute >= start) || (w.days.includes(yesterday) && minute < end);
  });
}

function nextWindowStart(windows: readonly TimeWindow[], now: number): number | null {
  let best: number | null = null;
  for (let offset = 0; offset <= 7; offset++) {
    for (const w of windows) {
      const d = new Date(now);
      d.setDate(d.getDate() + offset);
      if (!w.days.includes(d.getDay())) continue;
      const start = minutesOf(w.start);
      d.setHours(Math.floor(start / 60), start % 60, 0, 0);
      const t = d.getTime();
      if (t > now && (best === null || t < best)) best = t;
    }
  }
  return best;
}
