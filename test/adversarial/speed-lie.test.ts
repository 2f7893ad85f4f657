import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { openEngine } from '../../main/node/stage-factory.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';

const { dir, cleanup } = tempDir('tributary-speed-');
afterAll(cleanup);

/** Sits between a node and the coordinator and rewrites every result to claim 0.001 ms of work. */
async function boastingProxy(target: string): Promise<{ url: string; close(): void }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (client) => {
    const upstream = new WebSocket(target);
    const queued: Array<[RawData, boolean]> = [];
    const forward = (data: RawData, isBinary: boolean): void => {
      if (upstream.readyState !== WebSocket.OPEN) return void queued.push([data, isBinary]);
      let out: RawData | string = data;
      if (!isBinary) {
        const m = JSON.parse(String(data)) as { type: string; busyMs?: number };
        if (m.type === 'result') out = JSON.stringify({ ...m, busyMs: 0.001 });
      }
      upstream.send(out, { binary: isBinary });
    };
    client.on('message', forward);
    upstream.on('open', () => queued.splice(0).forEach(([d, b]) => forward(d, b)));
    upstream.on('message', (data, isBinary) => client.send(data, { binary: isBinary }));
    upstream.on('close', () => client.close());
    client.on('close', () => upstream.close());
    upstream.on('error', () => client.terminate());
    client.on('error', () => upstream.terminate());
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    close: () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };
}

describe('a node lying about its speed', () => {
  it('is routed by the speed the coordinator measures, so the slow liar gets the smaller share', async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ stages: 1, steps: 6, microBatchesPerStep: 8 }),
      `${dir}/c`,
    );
    const proxy = await boastingProxy(coordinator.url);
    // The liar's stage really is slow (40 ms more per forward); its results claim 0.001 ms.
    const liar = startNode(proxy.url, 'cpu', {
      createStage: async (_engine, spec) => {
        const stage = await (await openEngine('cpu')).create(spec);
        const forward = stage.forward.bind(stage);
        stage.forward = async (input, targets) => {
          await new Promise((r) => setTimeout(r, 40));
          return forward(input, targets);
        };
        return stage;
      },
    });
    const honest = startNode(coordinator.url, 'cpu');
    try {
      await coordinator.finished;
      const units = new Map(coordinator.store.balances().map((b) => [b.nodeId, b.units]));
      const liarUnits = units.get(liar.nodeId) ?? 0;
      const honestUnits = units.get(honest.nodeId) ?? 0;
      expect(liarUnits + honestUnits).toBe(48);
      expect(liarUnits).toBeLessThan(honestUnits);
    } finally {
      await Promise.all([liar.stop(), honest.stop()]);
      proxy.close();
      await coordinator.close();
    }
  }, 120_000);
});
