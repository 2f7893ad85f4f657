import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { repoRoot } from '../network/helpers.js';
import { until } from '../network/processes.js';

// bin/tributary.js is what `npx tributary` and `npm start` run: the built CLI, else the sources through tsx.
const launcher = join(repoRoot, 'bin', 'tributary.js');
const dir = mkdtempSync(join(tmpdir(), 'tributary-launcher-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('runs a GPU training run with Dawn’s start-up notes kept off stderr', { timeout: 120_000 }, () => {
  const run = spawnSync(
    process.execPath,
    [launcher, 'local', '--nodes', '1', '--stages', '1', '--steps', '1'],
    {
      cwd: dir,
      encoding: 'utf8',
      timeout: 110_000,
    },
  );
  expect(run.status, run.stderr).toBe(0);
  expect(run.stdout).toMatch(/summary: 1 steps in/);
  expect(run.stdout + run.stderr).not.toMatch(/maxDynamic/);
});

test('passes the exit code of bad usage through', () => {
  const run = spawnSync(process.execPath, [launcher, 'node', '--coordinator', 'http://127.0.0.1:7700'], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(run.status).toBe(2);
  expect(run.stderr).toMatch(/use ws:\/\/127\.0\.0\.1:7700/);
});

test('hands SIGINT to the CLI once, which stops cleanly', { timeout: 60_000 }, async () => {
  const child = spawn(
    process.execPath,
    [
      launcher,
      'node',
      '--coordinator',
      'ws://127.0.0.1:9',
      '--data-dir',
      join(dir, 'node'),
      '--no-dashboard',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  await until(
    'the node to report the unreachable coordinator',
    () => stdout.includes('cannot reach'),
    30_000,
  );
  child.kill('SIGINT');
  expect(await exited).toBe(0);
  expect(stdout).toMatch(/^stopped: 0 receipts this session/m);
});

test(
  'stops the CLI when the npm process that started it is gone (npm does not pass SIGTERM on)',
  { timeout: 60_000 },
  async () => {
    const out = join(dir, 'orphan.out');
    // `sh` stands in for npm exec's shell: it starts the launcher, reports its pid, and is then killed outright.
    const sh = spawn(
      'sh',
      [
        '-c',
        `"${process.execPath}" "${launcher}" node --coordinator ws://127.0.0.1:9 --data-dir "${join(dir, 'orphan')}" --no-dashboard > "${out}" 2>&1 & echo $!; wait`,
      ],
      { env: { ...process.env, npm_command: 'exec' }, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let pid = 0;
    sh.stdout.on('data', (d: Buffer) => (pid = Number(d.toString().trim())));
    await until(
      'the launcher to start the node',
      () => pid > 0 && existsSync(out) && readFileSync(out, 'utf8').includes('cannot reach'),
      30_000,
    );
    sh.kill('SIGKILL');
    const running = (): boolean => {
      try {
        return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    await until('the launcher to exit', () => !running(), 20_000);
    expect(readFileSync(out, 'utf8')).toMatch(/^SIGTERM: finishing or handing back/m);
  },
);
