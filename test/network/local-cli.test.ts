import { spawnSync } from 'node:child_process';
import { expect, test } from 'vitest';
import { repoRoot } from './helpers.js';

test(
  '`tributary local` trains from the sources and prints progress and a summary',
  { timeout: 120_000 },
  () => {
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'main/cli/index.ts', 'local', '--nodes', '2', '--stages', '2', '--steps', '3'],
      {
        cwd: repoRoot,
        encoding: 'utf8',
        timeout: 110_000,
      },
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/step 1\/3 {2}loss \d+\.\d{4} {2}\d+ tok\/s {2}nodes per stage \[1, 1\]/);
    expect(run.stdout).toMatch(/summary: 3 steps in [\d.]+ s, loss [\d.]+ -> [\d.]+, 768 tokens/);
    expect(run.stdout).toMatch(/24 receipts signed/);
  },
);

test('bad flags are refused with a message', () => {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'main/cli/index.ts', 'local', '--nodes', 'zero'],
    { cwd: repoRoot, encoding: 'utf8' },
  );
  expect(run.status).not.toBe(0);
  expect(run.stderr).toMatch(/--nodes.*expected a whole number/);
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

test('a --link the shaper cannot read is refused with the expected form', () => {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'main/cli/index.ts', 'local', '--link', '80mbps,40ms'],
    { cwd: repoRoot, encoding: 'utf8' },
  );
  expect(run.status).toBe(2);
  expect(run.stderr).toMatch(/--link.*expected RATE,DELAY such as 80mbit,40ms/);
});
