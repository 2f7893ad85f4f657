import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { CoordinatorMetrics } from './metrics.js';
import type { CoordinatorStore } from './store.js';

/** What the HTTP API reads; it never changes the run. */
export interface HttpApiSource {
  metrics: CoordinatorMetrics;
  store: CoordinatorStore;
  status(): unknown;
  tokensPerSecond(): number;
}

/** `GET /status`, `/metrics` (Prometheus), `/api/balances`, `/api/losses`: the coordinator's read-only API. */
export function httpApi(source: HttpApiSource): RequestListener {
  return (req, res) => void serve(source, req, res);
}

async function serve(source: HttpApiSource, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/metrics') {
    source.metrics.tokensPerSecond.set(source.tokensPerSecond());
    res.writeHead(200, { 'content-type': source.metrics.registry.contentType });
    res.end(await source.metrics.registry.metrics());
  } else if (path === '/status' || path === '/api/status') {
    json(res, source.status());
  } else if (path === '/api/balances') {
    json(res, source.store.balances());
  } else if (path === '/api/losses') {
    json(res, source.store.lossCurve());
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: try /status, /metrics, /api/balances, /api/losses\n');
  }
}

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
