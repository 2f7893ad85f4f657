import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { repoRoot } from './helpers.js';
import { until } from './processes.js';

// Each run gets its own TMPDIR, so "nothing left behind" can be checked exactly.
const tmp = mkdtempSync(join(tmpdir(), 'tributary-local-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const cli = ['--import', 'tsx', 'main/cli/index.ts', 'local'];
const env = { ...process.env, TMPDIR: tmp };
const leftovers = (): string[] => readdirSync(tmp).filter((f) => f.startsWith('tributary-local-'));

test(
  '`tributary local` trains from the sources, names the adapter, prints progress and a summary, and leaves no temp dir',
  { timeout: 120_000 },
  () => {
    const run = spawnSync(process.execPath, [...cli, '--nodes', '2', '--stages', '2', '--steps', '3'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 110_000,
      env,
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^tributary local: 2 nodes, 2 stages, 3 steps on \S.*$/m);
    expect(run.stdout).not.toMatch(/steps on gpu$/m);
    expect(run.stdout).toMatch(/step 1\/3 {2}loss \d+\.\d{4} {2}\d+ tok\/s {2}nodes per stage \[1, 1\]/);
    expect(run.stdout).toMatch(/summary: 3 steps in [\d.]+ s, 768 tokens/);
    // Without a run.json, local validates on the held-out tail at the end (and every 10 steps).
    expect(run.stdout).toMatch(/^validation after step 3: held-out loss [\d.]+$/m);
    expect(run.stdout).toMatch(
      /^loss: first [\d.]+, final [\d.]+, best [\d.]+ \(step [123]\); validation [\d.]+ after step 3, best [\d.]+$/m,
    );
    // 3 steps x 4 micro-batches x 2 stages, and the held-out validation (4 micro-batches x 2 stage forwards).
    expect(run.stdout).toMatch(/32 receipts signed/);
    expect(run.stdout).not.toMatch(/stage 0\b|blocks 0/);
    expect(leftovers()).toEqual([]);
  },
);

test(
  'SIGINT stops the run, still prints the summary and removes the temp dir',
  { timeout: 120_000 },
  async () => {
    const child = spawn(
      process.execPath,
      [...cli, '--engine', 'cpu', '--nodes', '1', '--stages', '1', '--steps', '100000'],
      {
        cwd: repoRoot,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    await until('a first step', () => /step +1\/100000/.test(stdout), 60_000);
    expect(leftovers()).toHaveLength(1);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/summary: \d+ steps in/);
    expect(leftovers()).toEqual([]);
  },
);

test.each([
  [['--nodes', 'zero'], /--nodes.*expected a whole number/],
  [
    ['--nodes', '1', '--stages', '2'],
    /a run with 2 stages needs at least 2 nodes, one per stage, and --nodes is 1/,
  ],
  [['--config', 'missing.json'], /cannot read run config missing\.json/],
  [['--corpus', 'missing.txt'], /cannot read --corpus missing\.txt/],
  [['--data-plane', 'pigeon'], /--data-plane.*expected relay or p2p/],
])('refuses %j at once with exit code 2 and says why', (args, message) => {
  const run = spawnSync(process.execPath, [...cli, ...args], { cwd: repoRoot, encoding: 'utf8', env });
  expect(run.status).toBe(2);
  expect(run.stderr).toMatch(message);
  expect(leftovers()).toEqual([]);
});

test('`tributary local --link` trains over shaped links and says so', { timeout: 120_000 }, () => {
  const run = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      'main/cli/index.ts',
      'local',
      '--nodes',
      '2',
      '--steps',
      '2',
      '--engine',
      'cpu',
      '--link',
      '80mbit,5ms',
    ],
    { cwd: repoRoot, encoding: 'utf8', timeout: 110_000 },
  );
  expect(run.status, run.stderr).toBe(0);
  expect(run.stdout).toMatch(/link: {3}80 Mbit\/s, 5 ms one way/);
  expect(run.stdout).toMatch(/summary: 2 steps in/);
});

test(
  '`tributary local --data-plane p2p` sends the tensors between the nodes over shaped links, none through the coordinator',
  { timeout: 120_000 },
  () => {
    const run = spawnSync(
      process.execPath,
      [
        ...cli,
        '--nodes',
        '2',
        '--steps',
        '2',
        '--engine',
        'cpu',
        '--link',
        '80mbit,5ms',
        '--data-plane',
        'p2p',
      ],
      { cwd: repoRoot, encoding: 'utf8', timeout: 110_000, env },
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/link: {3}80 Mbit\/s, 5 ms one way; tensors peer to peer over libp2p/);
    // 2 steps x 4 micro-batches each way and 4 validation forwards: 20 tensors of 2 x 32 x 32 f32.
    expect(run.stdout).toMatch(/relayed 0\.00 MB between stages, 0\.16 MB peer to peer;/);
    expect(leftovers()).toEqual([]);
  },
);

test('a --link the shaper cannot read is refused with the expected form', () => {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'main/cli/index.ts', 'local', '--link', '80mbps,40ms'],
    { cwd: repoRoot, encoding: 'utf8' },
  );
  expect(run.status).toBe(2);
  expect(run.stderr).toMatch(/--link.*expected RATE,DELAY such as 80mbit,40ms/);
});

test(
  'the summary adds the held-out validation loss when the run config measures it',
  { timeout: 120_000 },
  () => {
    const config = join(tmp, 'validation.json');
    writeFileSync(config, JSON.stringify({ validation: { every: 2 } }));
    const run = spawnSync(
      process.execPath,
      [...cli, '--engine', 'cpu', '--nodes', '2', '--steps', '3', '--config', config],
      { cwd: repoRoot, encoding: 'utf8', timeout: 110_000, env },
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(
      /^loss: first [\d.]+, final [\d.]+, best [\d.]+ \(step \d\); validation [\d.]+ after step 3, best [\d.]+$/m,
    );
  },
);
