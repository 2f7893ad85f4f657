import { resolve } from 'node:path';
import { createServer, type ViteDevServer } from 'vite';

export const repoRoot = resolve(import.meta.dirname, '..', '..');

/**
 * Serves the repository through Vite on 127.0.0.1 (a secure origin, so pages get navigator.gpu), compiling
 * TypeScript on the fly: test pages import engine sources directly.
 */
export async function startPageServer(): Promise<{ url: (path: string) => string; close: () => Promise<void> }> {
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
