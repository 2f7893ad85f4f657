import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmokeResult } from '../../gpu/smoke/square.js';
import { launchChromium } from '../helpers/chromium.js';
import { startPageServer } from '../helpers/page-server.js';

describe('GPU smoke inside headless Chromium (browser WebGPU)', () => {
  let browser: Browser;
  let server: Awaited<ReturnType<typeof startPageServer>>;

  beforeAll(async () => {
    server = await startPageServer();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('runs a compute shader on navigator.gpu and reads the result back', async () => {
    const page = await browser.newPage();
    await page.goto(server.url('test/e2e/smoke-page/index.html'));
    const result = (await page.evaluate('window.smoke')) as SmokeResult | { error: string };
    if ('error' in result) throw new Error(result.error);
    console.log(`Chromium adapter: ${result.adapter}`);
    expect(result.ok, `wrong values read back: ${result.sample.join(', ')}`).toBe(true);
  });
});
