import { readFile, rename, writeFile } from 'node:fs/promises';
import { defaultSettings, parseSettings, type AgentSettings } from '../../shared/dashboard/settings.js';

export class SettingsFileError extends Error {}

/**
 * Reads settings.json; a missing file means defaults. A file with mistakes is reported and left as it is
 * (never replaced by defaults), so nothing the user wrote is lost.
 */
export async function loadSettings(path: string): Promise<AgentSettings> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return defaultSettings;
    throw err;
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
