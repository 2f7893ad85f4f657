import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'vite';
import { afterAll } from 'vitest';
import { repoRoot } from '../helpers/page-server.js';

let built: Promise<string> | null = null;

/** The renderer built as `npm run build:web` builds it, once per test file, into a temp dir removed after. */
export function rendererBundle(): Promise<string> {
  built ??= mkdtemp(join(tmpdir(), 'tributary-renderer-')).then(async (outDir) => {
    await build({
      configFile: false,
      root: resolve(repoRoot, 'renderer'),
      base: './',
      logLevel: 'error',
      build: { outDir, emptyOutDir: true },
    });
    return outDir;
  });
  return built;
}

afterAll(async () => {
  if (built) await rm(await built, { recursive: true, force: true });
  built = null;
});
