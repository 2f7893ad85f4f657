import {
  applySettingsPatch,
  type AgentSettings,
  type SettingsPatch,
} from '../../shared/dashboard/settings.js';

/** The settings as the form edits them: numbers stay text until saved, so a half-typed value is not lost. */
export interface SettingsDraft {
  runWhen: AgentSettings['runWhen'];
  idleMinutes: string;
  pauseOnBattery: boolean;
  gpuTempLimitC: string;
  tempStopMarginC: string;
  tempResumeBelowC: string;
  dutyCyclePct: string;
  schedule: { days: number[]; start: string; end: string }[];
  /** One program name per line. */
  pausePrograms: string;
  /** Empty means no cap. */
  vramCapMb: string;
  dashboardPort: string;
}

/** Field errors keyed by the setting they belong to ("gpuTempLimitC", "schedule.0.start", ...). */
export type FieldErrors = Record<string, string[]>;

export type DraftResult = { ok: true; patch: SettingsPatch } | { ok: false; errors: FieldErrors };

export function toDraft(settings: AgentSettings): SettingsDraft {
  return {
    runWhen: settings.runWhen,
    idleMinutes: String(Math.round((settings.idleAfterSeconds / 60) * 100) / 100),
    pauseOnBattery: settings.pauseOnBattery,
    gpuTempLimitC: String(settings.gpuTempLimitC),
    tempStopMarginC: String(settings.tempStopMarginC),
    tempResumeBelowC: String(settings.tempResumeBelowC),
    dutyCyclePct: String(settings.dutyCyclePct),
    schedule: settings.schedule.map((w) => ({ days: [...w.days], start: w.start, end: w.end })),
    pausePrograms: settings.pausePrograms.join('\n'),
    vramCapMb: settings.vramCapMb === null ? '' : String(settings.vramCapMb),
    dashboardPort: String(settings.dashboardPort),
  };
}

function addError(errors: FieldErrors, key: string, message: string): void {
  (errors[key] ??= []).push(message);
}

/**
 * Turns the draft into a settings patch, validated against the shared schema on top of the current settings,
 * so the form shows exactly the errors the agent would give, next to the field they concern.
 */
export function draftToPatch(current: AgentSettings, draft: SettingsDraft): DraftResult {
  const errors: FieldErrors = {};
  // An unreadable number is reported here and left out of the patch, so the schema still checks the rest and
  // the form shows every problem at once.
  const number = (key: string, text: string, label: string): number | undefined => {
    const trimmed = text.trim();
    const value = trimmed === '' ? Number.NaN : Number(trimmed);
    if (Number.isFinite(value)) return value;
    addError(errors, key, `${label}: enter a number`);
    return undefined;
  };
  const idleMinutes = number('idleAfterSeconds', draft.idleMinutes, 'Idle time');
  const patch: SettingsPatch = {
    runWhen: draft.runWhen,
    idleAfterSeconds: idleMinutes === undefined ? undefined : Math.round(idleMinutes * 60),
    pauseOnBattery: draft.pauseOnBattery,
    gpuTempLimitC: number('gpuTempLimitC', draft.gpuTempLimitC, 'Temperature limit'),
    tempStopMarginC: number('tempStopMarginC', draft.tempStopMarginC, 'Stop margin'),
    tempResumeBelowC: number('tempResumeBelowC', draft.tempResumeBelowC, 'Resume margin'),
    dutyCyclePct: number('dutyCyclePct', draft.dutyCyclePct, 'GPU load cap'),
    schedule: draft.schedule.map((w) => ({
      days: [...w.days].sort((a, b) => a - b),
      start: w.start,
      end: w.end,
    })),
    pausePrograms: draft.pausePrograms
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== ''),
    vramCapMb: draft.vramCapMb.trim() === '' ? null : number('vramCapMb', draft.vramCapMb, 'GPU memory cap'),
    dashboardPort: number('dashboardPort', draft.dashboardPort, 'Dashboard port'),
  };
  const checked = applySettingsPatch(current, patch);
  if (!checked.ok) {
    for (const [key, messages] of Object.entries(fieldErrorsFromMessages(checked.errors))) {
      for (const message of messages) addError(errors, key, message);
    }
  }
  return Object.keys(errors).length === 0 ? { ok: true, patch } : { ok: false, errors };
}

/** The messages for one field, including those of its parts ("schedule.0" gathers "schedule.0.start"). */
export function errorsFor(errors: FieldErrors, key: string): string[] {
  return Object.entries(errors)
    .filter(([k]) => k === key || k.startsWith(`${key}.`))
    .flatMap(([, messages]) => messages);
}

/** Maps "path: message" strings (the shared schema's and the agent's) onto the fields they concern. */
export function fieldErrorsFromMessages(messages: string[]): FieldErrors {
  const errors: FieldErrors = {};
  for (const message of messages) {
    const split = message.indexOf(': ');
    if (split > 0 && /^[A-Za-z]+(\.\w+)*$/.test(message.slice(0, split))) {
      addError(errors, message.slice(0, split), message.slice(split + 2));
    } else addError(errors, 'settings', message);
  }
  return errors;
}
