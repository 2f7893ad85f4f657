import { z } from 'zod';

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'use 24-hour time like "22:30"');

/** A weekly window in local time; `end` before `start` means the window runs past midnight. */
export const timeWindowSchema = z
  .object({
    /** 0 = Sunday ... 6 = Saturday: the day the window starts on. */
    days: z
      .array(
        z
          .number()
          .int()
          .min(0, 'days run 0 (Sunday) to 6 (Saturday)')
          .max(6, 'days run 0 (Sunday) to 6 (Saturday)'),
      )
      .min(1, 'pick at least one day')
      .default([0, 1, 2, 3, 4, 5, 6]),
    start: hhmm,
    end: hhmm,
  })
  .strict()
  .refine((w) => w.start !== w.end, { message: 'a window needs different start and end times' });
export type TimeWindow = z.infer<typeof timeWindowSchema>;

/** A coordinator's address as the settings store it; the dashboard checks what a person types against it too. */
export const NETWORK_URL_PATTERN = /^wss?:\/\/[^\s/]+(\/\S*)?$/;

/** A training network: its coordinator's address and the key it must prove it holds (pinned on accept). */
export const networkEntrySchema = z
  .object({
    url: z
      .string()
      .trim()
      .max(500)
      .regex(NETWORK_URL_PATTERN, 'a network address starts with ws:// or wss://'),
    coordinatorKey: z.string().regex(/^[0-9a-f]{64}$/, "the coordinator's key is 64 hexadecimal characters"),
  })
  .strict();
export type NetworkEntry = z.infer<typeof networkEntrySchema>;

/** Every limit a contributor can set. */
const settingsFieldsSchema = z
  .object({
    /** 'idle': only after `idleAfterSeconds` without input (or while locked); 'always': headless boxes. */
    runWhen: z.enum(['idle', 'always']),
    idleAfterSeconds: z
      .number()
      .int()
      .min(10, 'idle time must be at least 10 seconds')
      .max(86_400, 'idle time must be at most a day (86400 seconds)'),
    pauseOnBattery: z.boolean(),
    gpuTempLimitC: z
      .number()
      .min(40, 'the GPU temperature limit must be at least 40 °C')
      .max(100, 'the GPU temperature limit must be at most 100 °C'),
    /** Work stops once the GPU is this far above the limit, and resumes only below the limit. */
    tempStopMarginC: z.number().min(1).max(15),
    /** After a stop, work resumes once the GPU is this far below the limit (hysteresis). */
    tempResumeBelowC: z.number().min(1).max(20),
    dutyCyclePct: z
      .number()
      .int()
      .min(5, 'the GPU load cap must be at least 5%')
      .max(100, 'the GPU load cap is a percentage: at most 100'),
    /** When contribution is allowed; empty means any time. */
    schedule: z.array(timeWindowSchema).max(24, 'at most 24 time windows'),
    /** Process names (as the OS lists them, e.g. "steam", "Code.exe"); contribution pauses while one runs. */
    pausePrograms: z.array(z.string().trim().min(1).max(260)).max(200),
    /** Most device memory the stage may use; null means no cap. */
    vramCapMb: z.number().int().min(128, 'the GPU memory cap must be at least 128 MB').nullable(),
    dashboardPort: z.number().int().min(0).max(65_535),
    /** Networks the person has accepted; at most one is active. */
    networks: z.array(networkEntrySchema).max(20, 'at most 20 networks'),
    /** The URL of the network this machine works for; null until the person accepts one (first run). */
    activeNetwork: z.string().nullable(),
    /** Start Tributary (in the tray) when the person logs in; the desktop shell applies it. */
    startAtLogin: z.boolean(),
  })
  .strict();
export type AgentSettings = z.infer<typeof settingsFieldsSchema>;

/** What a new install runs with. */
export const defaultSettings: AgentSettings = {
  runWhen: 'idle',
  idleAfterSeconds: 180,
  pauseOnBattery: true,
  gpuTempLimitC: 80,
  tempStopMarginC: 3,
  tempResumeBelowC: 3,
  dutyCyclePct: 100,
  schedule: [],
  pausePrograms: [],
  vramCapMb: null,
  dashboardPort: 7733,
  networks: [],
  activeNetwork: null,
  startAtLogin: false,
};

/** Complete settings; keys left out take their defaults, so older settings files keep working. */
export const agentSettingsSchema = z.preprocess(
  (value) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? { ...defaultSettings, ...value }
      : value,
  settingsFieldsSchema.refine(
    (s) => s.activeNetwork === null || s.networks.some((n) => n.url === s.activeNetwork),
    { message: 'the active network must be one of the networks', path: ['activeNetwork'] },
  ),
);

/** A change to some settings; unlike agentSettingsSchema it fills in nothing. */
export const settingsPatchSchema = settingsFieldsSchema.partial();
export type SettingsPatch = z.infer<typeof settingsPatchSchema>;

export type SettingsResult = { ok: true; settings: AgentSettings } | { ok: false; errors: string[] };

/** Validates settings and says what is wrong in words a person can act on ("schedule.0.start: use ..."). */
export function parseSettings(input: unknown): SettingsResult {
  const parsed = agentSettingsSchema.safeParse(input);
  if (parsed.success) return { ok: true, settings: parsed.data };
  return { ok: false, errors: parsed.error.issues.map(describeIssue) };
}

/** Applies a partial change on top of the current settings, validating the result as a whole. */
export function applySettingsPatch(current: AgentSettings, patch: unknown): SettingsResult {
  const parsedPatch = settingsPatchSchema.safeParse(patch);
  if (!parsedPatch.success) return { ok: false, errors: parsedPatch.error.issues.map(describeIssue) };
  return parseSettings({ ...current, ...stripUndefined(parsedPatch.data) });
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.length > 0 ? issue.path.join('.') : 'settings';
  if (issue.code === 'unrecognized_keys')
    return `${where}: unknown setting ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  return `${where}: ${issue.message}`;
}
