import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where the agent keeps its ledger, settings and dashboard token; TRIBUTARY_HOME overrides. */
export function defaultDataDir(): string {
  if (process.env.TRIBUTARY_HOME) return process.env.TRIBUTARY_HOME;
  if (process.platform === 'win32') return join(process.env.APPDATA ?? join(homedir(), 'AppData', 'Roaming'), 'Tributary');
  if (process.platform === 'darwin') return join(homedir(), 'Library', 'Application Support', 'Tributary');
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'tributary');
}

export function agentPaths(dataDir: string): { ledger: string; settings: string; dashboardToken: string } {
  return {
    ledger: join(dataDir, 'ledger.sqlite'),
    settings: join(dataDir, 'settings.json'),
    dashboardToken: join(dataDir, 'dashboard-token'),
  };
}
