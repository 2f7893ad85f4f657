import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  agentCommandSchema,
  clientMessageSchema,
  type AgentHost,
  type AgentSnapshot,
  type ServerMessage,
} from '../../../shared/dashboard/contract.js';
import { SnapshotSender } from '../../../shared/dashboard/snapshot-changes.js';
import { resolveStatic, streamFile } from './static-files.js';
import { tokensEqual } from './token.js';

/** What the server needs from the agent. */
export interface DashboardHost extends AgentHost {
  exportCsv(table: string): string;
}

export interface DashboardServerOptions {
  host: DashboardHost;
  token: string;
  /** The built renderer (dist/web); null serves only the API. */
  staticDir: string | null;
  /** 0 picks a free port. */
  port: number;
}

export interface DashboardServer {
  port: number;
  /** The link to open, token included; it is exchanged for a cookie on first load. */
  url: string;
  close(): Promise<void>;
}

const COOKIE = 'tributary_token';
const MAX_BODY = 64 * 1024;

/**
 * The local web dashboard: HTTP for the renderer bundle and a small API, WebSocket for live snapshots and
 * commands. Binds 127.0.0.1 only, and refuses requests that lack the install's token, name another Host
 * (DNS rebinding) or come from another site (Origin / Sec-Fetch-Site).
 */
export async function startDashboardServer(options: DashboardServerOptions): Promise<DashboardServer> {
  const { host, token } = options;
  let port = options.port;
  const allowedHosts = (): Set<string> => new Set([`127.0.0.1:${port}`, `localhost:${port}`]);
  const allowedOrigins = (): Set<string> => new Set([`http://127.0.0.1:${port}`, `http://localhost:${port}`]);

  /** Returns an HTTP status and reason when the request must be refused, null when it may proceed. */
  function refuse(req: IncomingMessage, url: URL): [number, string] | null {
    if (!allowedHosts().has(String(req.headers.host ?? '').toLowerCase()))
      return [421, 'unexpected Host header'];
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins().has(origin)) return [403, 'cross-site request refused'];
    if (req.headers['sec-fetch-site'] === 'cross-site') return [403, 'cross-site request refused'];
    if (!authorized(req, url)) return [401, 'missing or wrong dashboard token'];
    return null;
  }

  function authorized(req: IncomingMessage, url: URL): boolean {
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    return (
      tokensEqual(bearer, token) ||
      tokensEqual(cookieToken(req), token) ||
      tokensEqual(url.searchParams.get('token'), token)
    );
  }

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendText(res, 500, `internal error: ${(err as Error).message}`);
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${port}`);
    const refusal = refuse(req, url);
    if (refusal) return sendText(res, refusal[0], refusal[1]);

    if (url.searchParams.has('token') && req.method === 'GET' && !url.pathname.startsWith('/api/')) {
      // Trade the token in the link for a cookie, and drop it from the address bar and history.
      url.searchParams.delete('token');
      res.writeHead(303, {
        'Set-Cookie': `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`,
        Location: `${url.pathname}${url.search}`,
        'Cache-Control': 'no-store',
      });
      res.end();
      return;
    }

    if (url.pathname === '/api/snapshot' && req.method === 'GET') return sendJson(res, 200, host.snapshot());
    if (url.pathname === '/api/command' && req.method === 'POST') {
      const parsed = agentCommandSchema.safeParse(await readJson(req));
      if (!parsed.success)
        return sendJson(res, 400, { ok: false, errors: parsed.error.issues.map((i) => i.message) });
      return sendJson(res, 200, await host.command(parsed.data));
    }
    if (url.pathname === '/api/ledger.csv' && req.method === 'GET') {
      const table = url.searchParams.get('table') ?? 'receipts';
      let csv: string;
      try {
        csv = host.exportCsv(table);
      } catch (err) {
        return sendText(res, 400, (err as Error).message);
      }
      res.writeHead(200, {
        ...securityHeaders(port),
        'Content-Type': 'text/csv; charset=utf-8',
        'Content-Disposition': `attachment; filename="tributary-${table}.csv"`,
      });
      res.end(csv);
      return;
    }
    if (url.pathname.startsWith('/api/')) return sendText(res, 404, 'no such API');
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'method not allowed');

    const found = options.staticDir === null ? null : await resolveStatic(options.staticDir, url.pathname);
    if (!found) return sendText(res, 404, 'not found (is the dashboard built? run `npm run build:web`)');
    res.writeHead(200, { ...securityHeaders(port), 'Content-Type': found.type });
    if (req.method === 'HEAD') return void res.end();
    streamFile(found.file).pipe(res);
  }

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_BODY });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${port}`);
    const refusal = url.pathname === '/ws' ? refuse(req, url) : ([404, 'not found'] as [number, string]);
    if (refusal) {
      socket.end(`HTTP/1.1 ${refusal[0]} ${refusal[1]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ws));
  });

  function serveSocket(ws: WebSocket): void {
    const send = (message: ServerMessage): void => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
    };
    const stream = new SnapshotSender();
    const push = (snapshot: AgentSnapshot): void => {
      const message = stream.message(snapshot);
      if (message) send(message);
    };
    push(host.snapshot());
    const unsubscribe = host.onSnapshot(push);
    ws.on('close', unsubscribe);
    // An oversized or malformed frame (close code 1009 or 1002) is an error event on this socket; ws closes
    // the socket itself, and without a listener the error would take the whole node process down.
    ws.on('error', () => ws.terminate());
    ws.on('message', (data, isBinary) => {
      let json: unknown = null;
      try {
        json = isBinary ? null : JSON.parse(String(data));
      } catch {
        json = null;
      }
      const parsed = clientMessageSchema.safeParse(json);
      if (!parsed.success) {
        const id = (json as { id?: unknown } | null)?.id;
        if (typeof id !== 'string') return send({ type: 'error', error: 'unrecognized message' });
        const errors = parsed.error.issues.map(
          (i) =>
            `${i.path.filter((p) => p !== 'command' && p !== 'patch').join('.') || 'command'}: ${i.message}`,
        );
        return send({ type: 'commandResult', id, ok: false, errors });
      }
      const { id, command } = parsed.data;
      void host.command(command).then(
        (result) => send({ type: 'commandResult', id, ...result }),
        (err: unknown) => send({ type: 'commandResult', id, ok: false, errors: [(err as Error).message] }),
      );
    });
  }

  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(options.port, '127.0.0.1', () => resolvePromise());
  });
  port = (server.address() as AddressInfo).port;

  return {
    port,
    url: `http://127.0.0.1:${port}/?token=${token}`,
    close: () =>
      new Promise<void>((resolveClose) => {
        for (const client of wss.clients) client.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolveClose());
      }),
  };
}

function cookieToken(req: IncomingMessage): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === COOKIE) return rest.join('=');
  }
  return null;
}

function securityHeaders(port: number): Record<string, string> {
  return {
    'Content-Security-Policy': [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data:",
      "font-src 'self'",
      `connect-src 'self' ws://127.0.0.1:${port} ws://localhost:${port}`,
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
      "object-src 'none'",
    ].join('; '),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cache-Control': 'no-store',
  };
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { ...securityHeaders(0), 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(`${text}\n`);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { ...securityHeaders(0), 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return null;
  }
}
