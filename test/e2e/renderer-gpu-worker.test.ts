import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GpuWorkerMessage } from '../../main/gpu-worker/protocol.js';
import { launchChromium } from '../helpers/chromium.js';
import { startPageServer } from '../helpers/page-server.js';

describe('GPU worker page in Chromium (browser WebGPU)', () => {
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

  it('takes its port from the preload message, acquires a device and moves tensors', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url('main/gpu-worker/index.html'));
    // Plays the worker preload and Electron main: hands over one end of a channel, then sends requests on it.
    const replies = (await page.evaluate(async () => {
      const { port1, port2 } = new MessageChannel();
      const received: unknown[] = [];
      const next = () =>
        new Promise<unknown>((resolve) =>
          port1.addEventListener('message', (e) => resolve(e.data), { once: true }),
        );
      port1.start();
      const ready = next();
      window.postMessage('tributary:gpu-port', '*', [port2]);
      received.push(await ready);
      let reply = next();
      port1.postMessage({ id: 1, type: 'acquire' });
      received.push(await reply);
      reply = next();
      const tensor = Float32Array.from([1.5, -2, 3.25]);
      port1.postMessage({ id: 2, type: 'echo', tensors: [tensor] }, [tensor.buffer]);
      const echoed = (await reply) as { tensors: Float32Array[] };
      received.push({
        ...echoed,
        tensors: echoed.tensors.map((t) => Array.from(t)),
        detached: tensor.byteLength === 0,
      });
      reply = next();
      port1.postMessage({ id: 3, type: 'release' });
      received.push(await reply);
      return received;
    })) as (GpuWorkerMessage & Record<string, unknown>)[];

    expect(replies[0]).toEqual({ type: 'ready', hasWebGpu: true });
    const acquired = replies[1];
    if (acquired?.type !== 'acquired') throw new Error(`no device: ${JSON.stringify(acquired)}`);
    console.log(
      `GPU worker page adapter: ${acquired.adapter.description || acquired.adapter.architecture} (fallback: ${acquired.adapter.isFallback})`,
    );
    expect(acquired.id).toBe(1);
    expect(replies[2]).toEqual({ id: 2, type: 'echo', tensors: [[1.5, -2, 3.25]], detached: true });
    expect(replies[3]).toEqual({ id: 3, type: 'released' });
    expect(errors).toEqual([]);
  });

  it('ignores a port offered from anywhere but its own window', async () => {
    const page = await browser.newPage();
    await page.goto(server.url('main/gpu-worker/index.html'));
    const answered = await page.evaluate(async () => {
      const { port1, port2 } = new MessageChannel();
      port1.start();
      const got = new Promise<boolean>((resolve) => {
        port1.addEventListener('message', () => resolve(true), { once: true });
        setTimeout(() => resolve(false), 500);
      });
      // A message whose source is not the page's own window (another frame or window posted it).
      window.dispatchEvent(
        new MessageEvent('message', { data: 'tributary:gpu-port', source: null, ports: [port2] }),
      );
      return got;
    });
    expect(answered).toBe(false);
  });
});
