import { describe, expect, it } from 'vitest';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { useChromiumPages } from '../helpers/page-server.js';

/**
 * The GPU worker page tunes the matmul on Chromium's own WebGPU (SwiftShader here) on its first stage, and
 * hands main the cache text to keep; given that text on a new device, it reads its choice from it.
 */
describe("the GPU worker page's matmul tuning in Chromium", () => {
  const pages = useChromiumPages();

  it('measures on the first stage, returns the cache text, and reuses it on the next device', async () => {
    const config: GptConfig = {
      vocabSize: 32,
      contextLength: 8,
      width: 16,
      heads: 2,
      layers: 1,
      mlpRatio: 4,
    };
    const spec = { config, range: wholeModel(config), shape: { batch: 2, seq: 8 }, seed: 3 };
    const page = await pages.open('main/gpu-worker/index.html');
    const result = (await page.evaluate(async (spec) => {
      const { port1, port2 } = new MessageChannel();
      port1.start();
      let nextId = 0;
      const call = (message: Record<string, unknown>) =>
        new Promise<Record<string, unknown>>((resolve) => {
          const id = ++nextId;
          const listener = (e: MessageEvent) => {
            if (e.data.id !== id) return;
            port1.removeEventListener('message', listener);
            resolve(e.data as Record<string, unknown>);
          };
          port1.addEventListener('message', listener);
          port1.postMessage({ ...message, id });
        });
      window.postMessage('tributary:gpu-port', '*', [port2]);
      const created: Record<string, unknown>[] = [];
      let tuningCache: unknown = null;
      for (let device = 0; device < 2; device++) {
        await call({ type: 'acquire' });
        const reply = await call({ type: 'create-stage', spec, tuningCache });
        if (reply.type === 'error') return { error: reply.message };
        created.push(reply);
        tuningCache = reply.tuningCache ?? tuningCache;
        await call({ type: 'release' });
      }
      return { created };
    }, spec)) as { created: { log: string[]; tuningCache: string | null }[] } | { error: string };
    if ('error' in result) throw new Error(result.error);
    const [first, second] = result.created;
    console.log(`Chromium GPU worker: ${first!.log.join(' | ')} then ${second!.log.join(' | ')}`);
    expect(first!.log).toEqual([
      expect.stringMatching(/^matmul kernels \(measured in [\d.]+ s\): .*: forward /),
    ]);
    const cache = JSON.parse(first!.tuningCache!) as Record<string, { adapter: string; version: number }>;
    const [adapter] = Object.keys(cache);
    expect(Object.keys(cache)).toHaveLength(1);
    expect(first!.log[0]).toContain(`${adapter}: forward`);
    expect(second!.log).toEqual([expect.stringMatching(/^matmul kernels \(cache\): /)]);
    expect(second!.tuningCache).toBeNull();
  });
});
