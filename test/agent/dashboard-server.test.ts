import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Agent } from '../../main/agent/agent.js';
import type { DashboardServer } from '../../main/agent/dashboard/server.js';
import {
  agentSnapshotSchema,
  serverMessageSchema,
  type ServerMessage,
} from '../../shared/dashboard/contract.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { applySnapshotChanges } from '../../shared/dashboard/snapshot-changes.js';
import { openQuietAgent } from '../helpers/agent.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe('local dashboard server on 127.0.0.1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-dash-'));
  const web = join(dir, 'web');
  let agent: Agent;
  let server: DashboardServer;
  let token: string;
  let host: string;

  beforeAll(async () => {
    mkdirSync(web, { recursive: true });
    writeFileSync(
      join(web, 'index.html'),
      '<!doctype html><title>Tributary</title><script src="/app.js"></script>',
    );
    writeFileSync(join(web, 'app.js'), 'console.log("hi")');
    writeFileSync(join(dir, 'secret.txt'), 'do not serve');
    agent = await openQuietAgent({
      dataDir: join(dir, 'data'),
      settings: { ...defaultSettings, runWhen: 'always' },
    });
    server = await agent.startDashboard({ staticDir: web, port: 0 });
    token = new URL(server.url).searchParams.get('token')!;
    host = `127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function get(
    path: string,
    headers: Record<string, string> = {},
    method = 'GET',
    body?: string,
  ): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: server.port, path, method, headers: { host, ...headers } },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  type Inbox = { next(predicate: (m: ServerMessage) => boolean): Promise<ServerMessage> };

  /** Opens a WebSocket; resolves with it (and its inbox, listening from the start) once open, or with the refusal's status. */
  function socket(
    headers: Record<string, string>,
    query = '',
  ): Promise<{ ws: WebSocket; inbox: Inbox } | number> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws${query}`, { headers: { host, ...headers } });
      const inbox = messages(ws);
      ws.on('open', () => resolve({ ws, inbox }));
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', reject);
    });
  }

  function messages(ws: WebSocket): Inbox {
    const seen: ServerMessage[] = [];
    const waiters: { predicate: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
    ws.on('message', (data) => {
      const m = serverMessageSchema.parse(JSON.parse(String(data)));
      const w = waiters.findIndex((x) => x.predicate(m));
      if (w >= 0) waiters.splice(w, 1)[0]!.resolve(m);
      else seen.push(m);
    });
    return {
      next: (predicate) => {
        const i = seen.findIndex(predicate);
        if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0]!);
        return new Promise((resolve) => waiters.push({ predicate, resolve }));
      },
    };
  }

  it('stores the per-install token readable by its owner only', () => {
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(join(dir, 'data', 'dashboard-token')).mode & 0o777).toBe(0o600);
  });

  it('refuses requests without the token', async () => {
    expect((await get('/')).status).toBe(401);
    expect((await get('/api/snapshot')).status).toBe(401);
    expect((await get('/api/snapshot', { authorization: 'Bearer wrong' })).status).toBe(401);
    expect(await socket({})).toBe(401);
  });

  it('refuses a foreign Host header even with the token (DNS rebinding)', async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect((await get('/api/snapshot', { ...auth, host: `evil.example:${server.port}` })).status).toBe(421);
    expect((await get('/api/snapshot', { ...auth, host: '127.0.0.1:1' })).status).toBe(421);
    expect(await socket({ ...auth, host: `rebound.example:${server.port}` })).toBe(421);
  });

  it('refuses cross-site Origins even with the token', async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect((await get('/api/snapshot', { ...auth, origin: 'http://evil.example' })).status).toBe(403);
    expect(
      (
        await get(
          '/api/command',
          { ...auth, origin: 'null', 'content-type': 'application/json' },
          'POST',
          '{"type":"resume"}',
        )
      ).status,
    ).toBe(403);
    expect((await get('/api/snapshot', { ...auth, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect(await socket({ cookie: `tributary_token=${token}`, origin: 'https://evil.example' })).toBe(403);
  });

  it('trades ?token= on the first page load for a strict cookie, then serves pages with a strict CSP', async () => {
    const first = await get(`/?token=${token}`);
    expect(first.status).toBe(303);
    expect(first.headers.location).toBe('/');
    const cookie = String(first.headers['set-cookie']);
    expect(cookie).toMatch(/^tributary_token=[^;]+; HttpOnly; SameSite=Strict; Path=\//);
    const page = await get('/', { cookie: cookie.split(';')[0]! });
    expect(page.status).toBe(200);
    expect(page.body).toContain('<title>Tributary</title>');
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe');
    expect(page.headers['x-frame-options']).toBe('DENY');
    const js = await get('/app.js', { cookie: cookie.split(';')[0]! });
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    const escape = await get('/..%2fsecret.txt', { cookie: cookie.split(';')[0]! });
    expect(escape.body).not.toContain('do not serve');
  });

  it('serves the snapshot and CSV to a Bearer token', async () => {
    const snap = await get('/api/snapshot', { authorization: `Bearer ${token}` });
    expect(snap.status).toBe(200);
    expect(agentSnapshotSchema.parse(JSON.parse(snap.body)).state).toBe('running');
    const csv = await get('/api/ledger.csv?table=receipts', { authorization: `Bearer ${token}` });
    expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(csv.body.startsWith('seq,receipt_id,')).toBe(true);
    expect(
      (await get('/api/ledger.csv?table=sqlite_master', { authorization: `Bearer ${token}` })).status,
    ).toBe(400);
  });

  it(
    'streams snapshots over the WebSocket and carries commands, with same-origin cookie auth',
    { timeout: 10_000 },
    async () => {
      const opened = await socket({
        cookie: `tributary_token=${token}`,
        origin: `http://localhost:${server.port}`,
      });
      if (typeof opened === 'number') throw new Error(`upgrade refused: ${opened}`);
      const { ws: socketWs, inbox } = opened;
      const first = await inbox.next((m) => m.type === 'snapshot');
      expect(first.type === 'snapshot' && first.snapshot.state).toBe('running');

      socketWs.send(
        JSON.stringify({ type: 'command', id: 'c1', command: { type: 'pause', duration: '1h' } }),
      );
      expect(await inbox.next((m) => m.type === 'commandResult')).toEqual({
        type: 'commandResult',
        id: 'c1',
        ok: true,
      });
      // After the first snapshot only changes follow.
      const paused = await inbox.next((m) => m.type === 'changes' && m.fields.state === 'paused');
      expect(paused.type === 'changes' && paused.fields.reason).toMatch(/^Paused by you until/);
      expect(paused.type === 'changes' && Object.keys(paused.fields).sort()).toEqual(
        ['at', 'dutyCyclePct', 'reason', 'reasonCode', 'resumeAt', 'state'].sort(),
      );

      socketWs.send(
        JSON.stringify({
          type: 'command',
          id: 'c2',
          command: { type: 'setPayoutAddress', address: '0x123' },
        }),
      );
      const refused = await inbox.next((m) => m.type === 'commandResult');
      expect(refused).toMatchObject({
        id: 'c2',
        ok: false,
        errors: [expect.stringMatching(/40 hexadecimal digits/)],
      });

      socketWs.send(
        JSON.stringify({
          type: 'command',
          id: 'c3',
          command: { type: 'updateSettings', patch: { dutyCyclePct: 500 } },
        }),
      );
      expect(await inbox.next((m) => m.type === 'commandResult')).toMatchObject({
        id: 'c3',
        ok: false,
        errors: ['dutyCyclePct: the GPU load cap is a percentage: at most 100'],
      });

      socketWs.send('{"type":"command","id":"c4","command":{"type":"runShell","cmd":"rm -rf /"}}');
      expect(await inbox.next((m) => m.type === 'commandResult')).toMatchObject({ id: 'c4', ok: false });
      socketWs.send('not json');
      expect(await inbox.next((m) => m.type === 'error')).toEqual({
        type: 'error',
        error: 'unrecognized message',
      });

      socketWs.send(JSON.stringify({ type: 'command', id: 'c5', command: { type: 'resume' } }));
      await inbox.next((m) => m.type === 'changes' && m.fields.state === 'running');
      socketWs.close();
    },
  );

  it('sends the whole snapshot once, then only what changed: new loss points, not the curve', async () => {
    const opened = await socket({ cookie: `tributary_token=${token}` });
    if (typeof opened === 'number') throw new Error(`upgrade refused: ${opened}`);
    const { ws, inbox } = opened;
    const first = await inbox.next((m) => m.type === 'snapshot');
    if (first.type !== 'snapshot') throw new Error('expected a snapshot first');
    for (let step = 0; step < 300; step++) agent.addLoss(step, 5 - step / 100);
    agent.tick();
    const grown = await inbox.next((m) => m.type === 'changes');
    agent.addLoss(300, 1.5);
    agent.tick();
    const appended = await inbox.next((m) => m.type === 'changes');
    expect(appended).toEqual({
      type: 'changes',
      fields: { at: expect.any(String) },
      lossTail: [{ step: 300, loss: 1.5 }],
      lossLength: 301,
    });
    if (grown.type !== 'changes' || appended.type !== 'changes') throw new Error('expected changes');
    const rebuilt = applySnapshotChanges(applySnapshotChanges(first.snapshot, grown), appended);
    expect({ ...rebuilt, at: '' }).toEqual({ ...JSON.parse(JSON.stringify(agent.snapshot())), at: '' });
    ws.close();
  });
});
