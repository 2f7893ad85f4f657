import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Agent } from '../../main/agent/agent.js';
import type { DashboardServer } from '../../main/agent/dashboard/server.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { openQuietAgent } from '../helpers/agent.js';

/** A local client that holds the dashboard token sends frames the server must survive. */
describe('dashboard WebSocket under bad frames', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-dash-frames-'));
  let agent: Agent;
  let server: DashboardServer;
  const uncaught: Error[] = [];
  const record = (err: Error): void => void uncaught.push(err);

  beforeAll(async () => {
    //process.on('uncaughtException', record);
    agent = await openQuietAgent({
      dataDir: dir,
      settings: { ...defaultSettings, runWhen: 'always' },
    });
    server = await agent.startDashboard({ staticDir: null, port: 0 });
  });
  afterAll(async () => {
    process.off('uncaughtException', record);
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Opens an authenticated socket; `closed` settles with the close code whenever the server closes it. */
  async function connect(): Promise<{ ws: WebSocket; closed: Promise<number>; first: Promise<string> }> {
    const token = new URL(server.url).searchParams.get('token')!;
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    const first = new Promise<string>((resolve) => ws.once('message', (data) => resolve(String(data))));
    ws.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', () => reject(new Error('refused')));
    });
    return { ws, closed, first };
  }

  it('closes the socket on an oversized frame and keeps serving', async () => {
    const { ws, closed } = await connect();
    ws.send(Buffer.alloc(1024 * 1024, 0x61));
    expect(await closed).toBe(1009);
    const { ws: again, first } = await connect();
    expect(JSON.parse(await first)).toMatchObject({ type: 'snapshot' });
    again.close();
    expect(uncaught).toEqual([]);
  });

  it('closes the socket on an invalid frame (bad UTF-8 text, reserved bits) and keeps serving', async () => {
    for (const raw of [
      Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]), // text frame with invalid UTF-8
      Buffer.from([0xf1, 0x80, 0, 0, 0, 0]), // RSV bits set, no extension negotiated
    ]) {
      const { ws, closed } = await connect();
      (ws as unknown as { _socket: Socket })._socket.write(raw);
      expect([1002, 1007]).toContain(await closed);
    }
    (await connect()).ws.close();
    expect(uncaught).toEqual([]);
  });
});
