import { resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { createServer, type ViteDevServer } from 'vite';
import { afterAll, beforeAll } from 'vitest';
import { launchChromium } from './chromium.js';

export const repoRoot = resolve(import.meta.dirname, '..', '..');

/**
 * Serves the repository through Vite on 127.0.0.1 (a secure origin, so pages get navigator.gpu), compiling
 * TypeScript on the fly: test pages import engine sources directly.
 */
export async function startPageServer(): Promise<{
  url: (path: string) => string;
  close: () => Promise<void>;
}> {
  const server: ViteDevServer = await createServer({
    root: repoRoot,
    configFile: false,
    logLevel: 'error',
    server: { host: '127.0.0.1', port: 0, strictPort: false, hmr: false, watch: null },
    optimizeDeps: { noDiscovery: true, include: [] },
  });
  await server.listen();
  const address = server.httpServer?.address();
  if (!address || typeof address === 'string') throw new Error('page server has no TCP address');
  return {
    url: (path) => `http://127.0.0.1:${address.port}/${path.replace(/^\//, '')}`,
    close: () => server.close(),
  };
}

/**
 * Registers a page server and a headless Chromium for the enclosing describe block (started before its
 * tests, closed after them) and returns a way to open one of the repository's pages in it.
 */
export function useChromiumPages(): {
  newPage: () => Promise<Page>;
  url: (path: string) => string;
  open: (path: string) => Promise<Page>;
} {
  let browser: Browser | undefined;
  let server: Awaited<ReturnType<typeof startPageServer>> | undefined;
  beforeAll(async () => {
    server = await startPageServer();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });
  const started = (): { browser: Browser; server: NonNullable<typeof server> } => {
    if (!browser || !server) throw new Error('useChromiumPages: used outside a test');
    return { browser, server };
  };
  const newPage = (): Promise<Page> => started().browser.newPage();
  const url = (path: string): string => started().server.url(path);
  return {
    newPage,
    url,
    open: async (path) => {
      const page = await newPage();
      await page.goto(url(path));
      return page;
    },
  };
}
