import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { until } from './processes.js';

const { dir, cleanup } = tempDir('tributary-tls-');
afterAll(cleanup);

test('wss: a node that trusts the certificate trains over TLS', { timeout: 60_000 }, async () => {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const made = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { encoding: 'utf8' },
  );
  expect(made.status, made.stderr).toBe(0);
  const coordinator = await startCoordinator(tinyConfig({ steps: 2, stages: 1 }), join(dir, 'coord'), {
    tls: { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') },
  });
  expect(coordinator.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
  const node = startNode(coordinator.url, 'cpu', { ca: readFileSync(cert, 'utf8') });
  await coordinator.finished;
  expect(coordinator.status().step).toBe(2);
  await until('receipts over TLS', () => node.status.receipts === 2 * 4);
  await node.stop();
  await coordinator.close();
});
