import { describe, expect, it } from 'vitest';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { useChromiumPages } from '../helpers/page-server.js';
import { fixedRun, runFixedTraining, type FixedRunResult } from './engine-page/fixed-run.js';

/*
 * The same engine code trains the same small model on the same batches in headless Chromium (SwiftShader
 * WebGPU) and in Node (dawn.node on lavapipe). Two different fp32 implementations of exp/log/sqrt and
 * different reduction hardware give slightly different rounding; after a few AdamW steps the losses must
 * still agree within 1e-3 relative.
 */
const REL_TOL = 1e-3;

describe('the training engine in headless Chromium', () => {
  const pages = useChromiumPages();

  it(`trains ${fixedRun.steps} steps to the losses dawn.node gets`, async () => {
    const page = await pages.open('test/e2e/engine-page/index.html');

    const chromium = (await page.evaluate('window.engineRun')) as FixedRunResult | { error: string };
    if ('error' in chromium) throw new Error(chromium.error);
    const dawn = await runFixedTraining(dawnGpu(), DRIVER_HINT);
    console.log(
      `Chromium adapter: ${chromium.adapter}, lanes kernels: ${chromium.lanes ?? 'no'}\n  losses ${chromium.losses.map((l) => l.toFixed(6)).join(' ')}`,
    );
    console.log(
      `dawn.node adapter: ${dawn.adapter}, lanes kernels: ${dawn.lanes ?? 'no'}\n  losses ${dawn.losses.map((l) => l.toFixed(6)).join(' ')}`,
    );
    expect(chromium.losses).toHaveLength(fixedRun.steps);
    chromium.losses.forEach((loss, i) => {
      const rel = Math.abs(loss - dawn.losses[i]!) / dawn.losses[i]!;
      expect(rel, `step ${i}: Chromium ${loss} vs dawn.node ${dawn.losses[i]}`).toBeLessThan(REL_TOL);
    });
    expect(dawn.losses.at(-1)!).toBeLessThan(dawn.losses[0]!);
  }, 120_000);
});
