import { readFile, rename, writeFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import {
  applySettingsPatch,
  defaultSettings,
  parseSettings,
  type AgentSettings,
  type SettingsPatch,
} from '../../shared/dashboard/settings.js';

export class SettingsFileError extends Error {}

/**
 * Reads settings.json; a missing file means defaults unless `mustExist` (a file the user named). A file with
 * mistakes is reported and left as it is (never replaced by defaults), so nothing the user wrote is lost.
 */
export async function loadSettings(
  path: string,
  { mustExist = false }: { mustExist?: boolean } = {},
): Promise<AgentSettings> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !mustExist) return defaultSettings;
    throw new SettingsFileError(`cannot read settings from ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SettingsFileError(`${path} is not valid JSON (${(err as Error).message}); fix or delete it`);
  }
  const result = parseSettings(json);
  if (!result.ok)
    throw new SettingsFileError(`${path} has invalid settings:\n  ${result.errors.join('\n  ')}`);
  return result.settings;
}

/** Writes atomically (temp file + rename), so a crash mid-write leaves the old settings. */
export async function saveSettings(path: string, settings: AgentSettings): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, path);
}

/**
 * Settings as stored in settings.json plus the one-run overrides of command-line flags (`--run-when`,
 * `--dashboard-port`, ...). The agent runs with `effective`; only `stored` is ever written back.
 */
export interface LayeredSettings {
  stored: AgentSettings;
  overrides: Partial<AgentSettings>;
  effective: AgentSettings;
}

export function layerSettings(
  stored: AgentSettings,
  overrides: Partial<AgentSettings> = {},
): { ok: true; settings: LayeredSettings } | { ok: false; errors: string[] } {
  const result = parseSettings({ ...stored, ...overrides });
  return result.ok ? { ok: true, settings: { stored, overrides, effective: result.settings } } : result;
}

/**
 * Applies a change from the dashboard. Its form sends every field, so a field still equal to a flag's value
 * keeps that override and is not stored; a field the person changed becomes stored and drops the override.
 */
export function patchLayeredSettings(
  current: LayeredSettings,
  patch: SettingsPatch,
): { ok: true; settings: LayeredSettings } | { ok: false; errors: string[] } {
  const kept: Partial<AgentSettings> = {};
  const toStore: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(patch)) {
    const k = key as keyof AgentSettings;
    if (k in current.overrides && isDeepStrictEqual(value, current.effective[k]))
      Object.assign(kept, { [k]: current.overrides[k] });
    else toStore[k] = value;
  }
  for (const k of Object.keys(current.overrides) as (keyof AgentSettings)[])
    if (!(k in patch)) Object.assign(kept, { [k]: current.overrides[k] });
  const stored = applySettingsPatch(current.stored, toStore);
  return stored.ok ? layerSettings(stored.settings, kept) : stored;
}
