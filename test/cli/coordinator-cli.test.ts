import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { repoRoot } from '../network/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tributary-coordinator-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const p2pConfig = join(dir, 'p2p.json');
writeFileSync(p2pConfig, JSON.stringify({ dataPlane: 'p2p' }));

test.each([
  [['--config', 'missing.json'], /cannot read run config missing\.json/],
  [['--corpus', 'missing.txt'], /cannot read --corpus missing\.txt/],
  [['--cert', 'c.pem'], /--cert and --key go together/],
  [['--cert', 'c.pem', '--key', 'k.pem'], /cannot read --cert c\.pem/],
  [['--p2p-relay', '/ip4/127.0.0.1/tcp/0'], /--p2p-relay serves a run whose config says "dataPlane": "p2p"/],
  [['--config', p2pConfig, '--p2p-relay', 'port 7701'], /--p2p-relay port 7701 is not a multiaddr/],
])('tributary coordinator refuses %j with exit code 2, creating nothing', (args, message) => {
  const db = join(dir, `run-${args.join('').replace(/\W/g, '')}`, 'run.db');
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'main/cli/index.ts', 'coordinator', '--port', '0', '--db', db, ...args],
    { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 },
  );
  expect(run.status, run.stderr).toBe(2);
  expect(run.stderr).toMatch(message);
  expect(existsSync(join(db, '..'))).toBe(false);
});
