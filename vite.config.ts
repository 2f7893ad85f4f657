import { resolve } from 'node:path';
import { build, defineConfig, type LogLevel } from 'vite';

const repoRoot = import.meta.dirname;

/** The desktop shell's preloads: one self-contained CommonJS file each, since sandboxed preloads can
 * require nothing but 'electron' (no ESM, no sibling chunks). */
const PRELOADS = {
  preload: 'main/electron/preload.ts',
  'gpu-worker-preload': 'main/electron/gpu-worker-preload.ts',
};

async function buildPreloads(logLevel: LogLevel): Promise<void> {
  for (const [name, entry] of Object.entries(PRELOADS)) {
    await build({
      configFile: false,
      logLevel,
      build: {
        outDir: resolve(repoRoot, 'dist/preload'),
        emptyOutDir: name === 'preload',
        minify: false,
        sourcemap: false,
        lib: { entry: resolve(repoRoot, entry), formats: ['cjs'], fileName: () => `${name}.cjs` },
        rollupOptions: { external: ['electron'] },
      },
    });
  }
}

/**
 * Several pages, several builds, because Vite names an HTML output after its path under `root`:
 * - the renderer (renderer/index.html -> dist/web/index.html), one bundle for the Electron window and the
 *   local web dashboard, which the agent serves from dist/web;
 * - the hidden GPU worker page of the desktop app (main/gpu-worker/index.html -> dist/gpu-worker/index.html),
 *   kept out of dist/web so the web dashboard never serves the engine;
 * - the Electron preloads (dist/preload/*.cjs).
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
      await buildPreloads(builder.config.logLevel);
    },
  },
});
