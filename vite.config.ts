import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// One bundle for the Electron window and the local web dashboard (renderer/index.html), plus the hidden
// GPU worker page the desktop app runs the engine in (main/gpu-worker/index.html).
export default defineConfig({
  root: '.',
  base: './',
  build: {
    outDir: 'dist/web',
    emptyOutDir: true,
    rollupOptions: {
      input: {
        renderer: resolve(import.meta.dirname, 'renderer/index.html'),
      },
    },
  },
});
