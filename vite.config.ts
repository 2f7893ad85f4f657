import { resolve } from 'node:path';
import { build, defineConfig } from 'vite';

const repoRoot = import.meta.dirname;

/**
 * Two pages, two builds, because Vite names an HTML output after its path under `root`:
 * - the renderer (renderer/index.html -> dist/web/index.html), one bundle for the Electron window and the
 *   local web dashboard, which the agent serves from dist/web;
 * - the hidden GPU worker page of the desktop app (main/gpu-worker/index.html -> dist/gpu-worker/index.html),
 *   kept out of dist/web so the web dashboard never serves the engine.
 * `base: './'` keeps every asset URL relative, so the pages load from any origin or scheme.
 */
export default defineConfig({
  root: resolve(repoRoot, 'renderer'),
  base: './',
  build: {
    outDir: resolve(repoRoot, 'dist/web'),
    emptyOutDir: true,
  },
  builder: {
    async buildApp(builder) {
      const client = builder.environments.client;
      if (!client) throw new Error('vite: no client environment to build');
      await builder.build(client);
      await build({
        configFile: false,
        root: resolve(repoRoot, 'main/gpu-worker'),
        base: './',
        logLevel: builder.config.logLevel,
        build: { outDir: resolve(repoRoot, 'dist/gpu-worker'), emptyOutDir: true },
      });
    },
  },
});
