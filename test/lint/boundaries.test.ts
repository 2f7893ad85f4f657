import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..', '..');
const run = promisify(execFile);

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
}

/** Runs the project's own dependency-cruiser config, as `npm run lint` does, over wrong-way imports. */
async function cruise(dirs: string[]): Promise<Violation[]> {
  const bin = resolve(root, 'node_modules', '.bin', 'depcruise');
  const args = ['--config', '.dependency-cruiser.cjs', '--output-type', 'json', ...dirs];
  const { stdout } = await run(bin, args, { cwd: root, maxBuffer: 16 << 20 }).catch(
    (err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }),
  );
  return (JSON.parse(stdout) as { summary: { violations: Violation[] } }).summary.violations;
}

describe('layer rules (npm run lint)', () => {
  it('catches every wrong-direction import in the fixtures and nothing else', async () => {
    const found = (await cruise(['test/fixtures/boundaries']))
      .map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`)
      .sort();
    const base = 'test/fixtures/boundaries';
    expect(found).toEqual(
      [
        `electron-only-in-main: ${base}/shared/leaky.ts -> node_modules/electron/index.js`,
        `gpu-only-shared: ${base}/gpu/engine.ts -> ${base}/main/agent.ts`,
        `renderer-only-shared: ${base}/renderer/app.ts -> ${base}/gpu/engine.ts`,
        `shared-imports-nothing-of-ours: ${base}/shared/leaky.ts -> ${base}/coordinator/server.ts`,
      ].sort(),
    );
  });
});
