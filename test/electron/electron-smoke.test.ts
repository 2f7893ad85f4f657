import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { _electron as electron } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { GPU_WORKER_URL, RENDERER_URL } from '../../main/electron/channels.js';
import { repoRoot } from '../helpers/page-server.js';

/**
 * Electron's binary, where `npm ci` could download it (node_modules/electron/path.txt names it) or
 * ELECTRON_OVERRIDE_DIST_PATH points at one; otherwise why not. Never triggers a download.
 */
function electronBinary(): { path: string } | { missing: string } {
  const dir = process.env.ELECTRON_OVERRIDE_DIST_PATH ?? join(repoRoot, 'node_modules', 'electron', 'dist');
  const pathFile = join(repoRoot, 'node_modules', 'electron', 'path.txt');
  if (!process.env.ELECTRON_OVERRIDE_DIST_PATH && !existsSync(pathFile)) {
    return {
      missing:
        'no Electron binary is installed (node_modules/electron/path.txt is absent: installed with ELECTRON_SKIP_BINARY_DOWNLOAD or offline)',
    };
  }
  const name = process.env.ELECTRON_OVERRIDE_DIST_PATH ? 'electron' : readFileSync(pathFile, 'utf8').trim();
  const path = join(dir, name);
  return existsSync(path) ? { path } : { missing: `the Electron binary ${path} does not exist` };
}

/** A display: the session's, or Xvfb through xvfb-run. */
function display(): { ok: true; wrap: boolean } | { ok: false; missing: string } {
  if (process.env.DISPLAY || process.platform !== 'linux') return { ok: true, wrap: false };
  const xvfb = spawnSync('sh', ['-c', 'command -v xvfb-run'], { encoding: 'utf8' });
  return xvfb.status === 0
    ? { ok: true, wrap: true }
    : { ok: false, missing: 'no DISPLAY and no xvfb-run (apt-get install xvfb)' };
}

const dataDir = mkdtempSync(join(tmpdir(), 'tributary-electron-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('the built desktop app in real Electron', () => {
  it(
    'opens its window on the bundle, the hidden GPU worker page and its tray, and logs to app data',
    { timeout: 120_000 },
    async (context) => {
      const binary = electronBinary();
      const screen = display();
      const reason = 'missing' in binary ? binary.missing : !screen.ok ? screen.missing : null;
      if (reason !== null) {
        // Said where the suite's output shows it; the rest of the suite runs on.
        console.warn(`Electron smoke test did not run: ${reason}`);
        context.skip(`did not run: ${reason}`);
        return;
      }
      if (!('path' in binary) || !screen.ok) return;
      if (!existsSync(join(repoRoot, 'dist', 'main', 'electron', 'main.js'))) {
        throw new Error(
          'build the app first: npm run build (the smoke test starts dist/, as the installer would)',
        );
      }
      const app = await electron.launch({
        executablePath: screen.wrap ? 'xvfb-run' : binary.path,
        args: screen.wrap ? ['-a', binary.path, repoRoot, '--no-sandbox'] : [repoRoot, '--no-sandbox'],
        env: { ...process.env, TRIBUTARY_HOME: dataDir },
      });
      try {
        const window = await app.firstWindow();
        await window.waitForLoadState('domcontentloaded');
        await expect
          .poll(() => window.locator('h1').textContent(), { timeout: 30_000 })
          .toBe('Welcome to Tributary');
        const urls = await app.evaluate(({ BrowserWindow }) =>
          BrowserWindow.getAllWindows().map((w) => w.webContents.getURL()),
        );
        expect(urls).toEqual(expect.arrayContaining([RENDERER_URL, GPU_WORKER_URL]));
        await expect
          .poll(() => readFileSync(join(dataDir, 'logs', 'tributary.log'), 'utf8'), { timeout: 30_000 })
          .toMatch(/GPU worker (acquired a WebGPU device|stopped)/);
        // The tray says the same as the window: paused until the person accepts a network.
        expect(readFileSync(join(dataDir, 'logs', 'tributary.log'), 'utf8')).toContain(
          '"tray":"Tributary: Paused until you choose a network to join and accept"',
        );
      } finally {
        await app.close();
      }
    },
  );
});
