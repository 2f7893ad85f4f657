import { afterEach, describe, expect, it } from 'vitest';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { GpuWorkerClient, GpuWorkerError } from '../../main/electron/gpu-worker-client.js';
import { serveGpuPort } from '../../main/gpu-worker/loop.js';
import { asMainPort } from './main-port.js';
import type { GpuWorkerEvent } from '../../main/gpu-worker/protocol.js';

describe('GPU worker: main-side client and page-side loop over a MessagePort', () => {
  let client: GpuWorkerClient | null = null;
  afterEach(async () => {
    // Release destroys the device the loop acquired; the channel closes with the client.
    await client?.request({ type: 'release' }).catch(() => undefined);
    client?.close();
    client = null;
  });

  it('acquires a real WebGPU device (dawn.node) and reports the adapter', async () => {
    const { port1, port2 } = new MessageChannel();
    const events: GpuWorkerEvent[] = [];
    client = new GpuWorkerClient(asMainPort(port1));
    client.onEvent((e) => events.push(e));
    serveGpuPort(port2, dawnGpu());
    const acquired = await client.request({ type: 'acquire' });
    console.log(
      `GPU worker adapter: ${acquired.adapter.description || acquired.adapter.device} (fallback: ${acquired.adapter.isFallback})`,
    );
    expect(acquired.adapter.vendor + acquired.adapter.description, DRIVER_HINT).not.toBe('');
    expect(acquired.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 << 20);
    expect(events).toEqual([{ type: 'ready', hasWebGpu: true }]);
  });

  it('moves tensors both ways intact, replies matched to their requests', async () => {
    const { port1, port2 } = new MessageChannel();
    client = new GpuWorkerClient(asMainPort(port1));
    serveGpuPort(port2, dawnGpu());
    const a = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i));
    const b = Int32Array.from([1, -2, 3]);
    const [first, second] = await Promise.all([
      client.request({ type: 'echo', tensors: [a] }),
      client.request({ type: 'echo', tensors: [b, a] }),
    ]);
    expect(first.tensors).toEqual([a]);
    expect(second.tensors[0]).toBeInstanceOf(Int32Array);
    expect(second.tensors).toEqual([b, a]);
  });

  it('turns a page without WebGPU into a clear error, not a hang', async () => {
    const { port1, port2 } = new MessageChannel();
    client = new GpuWorkerClient(asMainPort(port1));
    serveGpuPort(port2, undefined);
    await expect(client.request({ type: 'acquire' })).rejects.toThrow(/no navigator\.gpu/);
    await expect(client.request({ type: 'acquire' })).rejects.toBeInstanceOf(GpuWorkerError);
  });

  it('fails what is in flight when the worker goes away', async () => {
    const { port1 } = new MessageChannel();
    client = new GpuWorkerClient(asMainPort(port1));
    const pending = client.request({ type: 'acquire' });
    client.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(client.request({ type: 'release' })).rejects.toThrow(/gone/);
  });
});
