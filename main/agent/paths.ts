import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where the agent keeps its ledger, settings and dashboard token: TRIBUTARY_HOME, else ~/.tributary (beside
 * the CLI's node key). The desktop shell passes its own per-user app-data folder instead.
 */
export function defaultDataDir(): string {
  return process.env.TRIBUTARY_HOME ?? join(homedir(), '.tributary');
}

export function agentPaths(dataDir: string): {
  ledger: string;
  settings: string;
  dashboardToken: string;
  coordinatorPins: string;
} {
  return {
    ledger: join(dataDir, 'ledger.sqlite'),
    coordinatorPins: join(dataDir, 'coordinators.json'),
    settings: join(dataDir, 'settings.json'),
    dashboardToken: join(dataDir, 'dashboard-token'),
  };
}
