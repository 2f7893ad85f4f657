import { describe, expect, it } from 'vitest';
import type { SmokeResult } from '../../gpu/smoke/square.js';
import { useChromiumPages } from '../helpers/page-server.js';

describe('GPU smoke inside headless Chromium (browser WebGPU)', () => {
  const pages = useChromiumPages();

  it('runs a compute shader on navigator.gpu and reads the result back', async () => {
    const page = await pages.open('test/e2e/smoke-page/index.html');

    const result = (await page.evaluate('window.smoke')) as SmokeResult | { error: string };
    if ('error' in result) throw new Error(result.error);
    console.log(`Chromium adapter: ${result.adapter}`);
    expect(result.ok, `wrong values read back: ${result.sample.join(', ')}`).toBe(true);
  });
});
