import { describe, expect, it } from 'vitest';
import { acquireDevice } from '../../gpu/device/acquire.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import type { GpuWorkerMessage } from '../../main/gpu-worker/protocol.js';
import { useChromiumPages } from '../helpers/page-server.js';

describe('GPU worker page in Chromium (browser WebGPU)', () => {
  const pages = useChromiumPages();

  it('takes its port from the preload message, acquires a device and moves tensors', async () => {
    const page = await pages.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(pages.url('main/gpu-worker/index.html'));
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

  it("trains a stage on Chromium's WebGPU to the losses dawn.node gets", async () => {
    const config: GptConfig = {
      vocabSize: 64,
      contextLength: 16,
      width: 32,
      heads: 4,
      layers: 2,
      mlpRatio: 4,
    };
    const spec = { config, range: wholeModel(config), shape: { batch: 2, seq: 16 }, seed: 5 };
    const adamw = { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const n = spec.shape.batch * spec.shape.seq;
    const ids = Array.from({ length: n + 1 }, (_, i) => (i * 5 + 3) % config.vocabSize);

    // The same three steps, once through the worker page's port and once on dawn.node directly.
    const page = await pages.open('main/gpu-worker/index.html');

    const chromium = (await page.evaluate(
      async ({ spec, adamw, ids, n }) => {
        const { port1, port2 } = new MessageChannel();
        port1.start();
        let nextId = 0;
        const call = (message: Record<string, unknown>) =>
          new Promise<{ type: string; result?: unknown; message?: string }>((resolve) => {
            const id = ++nextId;
            const listener = (e: MessageEvent) => {
              if (e.data.id !== id) return;
              port1.removeEventListener('message', listener);
              resolve(e.data);
            };
            port1.addEventListener('message', listener);
            port1.postMessage({ ...message, id });
          });
        window.postMessage('tributary:gpu-port', '*', [port2]);
        const failed = (r: { type: string; message?: string }) => (r.type === 'error' ? r.message : null);
        const acquired = await call({ type: 'acquire' });
        if (failed(acquired)) return { error: failed(acquired) };
        const created = await call({ type: 'create-stage', spec });
        if (failed(created)) return { error: failed(created) };
        const tokens = Int32Array.from(ids.slice(0, n));
        const targets = Int32Array.from(ids.slice(1));
        const losses: number[] = [];
        for (let step = 0; step < 3; step++) {
          void call({ type: 'stage-call', method: 'zeroGrad', args: [] });
          const forward = await call({
            type: 'stage-call',
            method: 'forward',
            args: [{ kind: 'tokens', tokens }, targets],
          });
          if (failed(forward)) return { error: failed(forward) };
          losses.push((forward.result as { loss: number }).loss);
          await call({ type: 'stage-call', method: 'backward', args: [null, 1] });
          await call({ type: 'stage-call', method: 'step', args: [adamw, 1] });
        }
        await call({ type: 'release' });
        return { losses };
      },
      { spec, adamw, ids, n },
    )) as { losses: number[] } | { error: string };
    if ('error' in chromium) throw new Error(chromium.error);

    const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
    const stage: StageTrainer = await GpuStage.create(device, config, spec.range, spec.shape, {
      seed: spec.seed,
    });
    const dawn: number[] = [];
    for (let step = 0; step < 3; step++) {
      stage.zeroGrad();
      const forward = await stage.forward(
        { kind: 'tokens', tokens: Int32Array.from(ids.slice(0, n)) },
        Int32Array.from(ids.slice(1)),
      );
      if (forward.kind !== 'loss') throw new Error('a whole-model stage returns the loss');
      dawn.push(forward.loss);
      await stage.backward(null, 1);
      await stage.step(adamw, 1);
    }
    stage.destroy();
    device.destroy();

    console.log(
      `worker page (SwiftShader) ${chromium.losses.map((l) => l.toFixed(6)).join(' ')}; dawn.node ${dawn.map((l) => l.toFixed(6)).join(' ')}`,
    );
    chromium.losses.forEach((loss, i) =>
      expect(Math.abs(loss - dawn[i]!) / dawn[i]!, `step ${i}`).toBeLessThan(1e-3),
    );
    expect(chromium.losses[2]!).toBeLessThan(chromium.losses[0]!);
  });

  it('ignores a port offered from anywhere but its own window', async () => {
    const page = await pages.open('main/gpu-worker/index.html');

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
