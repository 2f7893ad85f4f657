import { statSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { signReceipt } from '../../coordinator/receipts.js';
import { Ed25519Keys, verifyEd25519 } from '../../main/identity/ed25519.js';
import { FileKeyStore, MemoryKeyStore, loadOrCreateKeys } from '../../main/identity/key-store.js';
import { verifyReceipt } from '../../main/identity/receipts.js';
import { tempDir } from './helpers.js';

const { dir, cleanup } = tempDir('tributary-id-');
afterAll(cleanup);

test('a node key is created once, stored 0600, and loads back to the same identity', () => {
  const path = join(dir, 'sub', 'node.key');
  const first = loadOrCreateKeys(new FileKeyStore(path));
  expect(statSync(path).mode & 0o777).toBe(0o600);
  const again = loadOrCreateKeys(new FileKeyStore(path));
  expect(again.publicKeyHex).toBe(first.publicKeyHex);
  expect(first.publicKeyHex).toMatch(/^[0-9a-f]{64}$/);
});

test('any KeyStore works: the key is created on first use and reused after', () => {
  const store = new MemoryKeyStore();
  expect(store.read()).toBeNull();
  const keys = loadOrCreateKeys(store);
  expect(loadOrCreateKeys(store).publicKeyHex).toBe(keys.publicKeyHex);
});

test('a key file others can read is refused with what to do', () => {
  const path = join(dir, 'open.key');
  writeFileSync(path, Ed25519Keys.generate().toPem());
  chmodSync(path, 0o644);
  expect(() => loadOrCreateKeys(new FileKeyStore(path))).toThrow(/chmod 600/);
});

test('signatures verify only with the right key and bytes; garbage never throws', () => {
  const keys = Ed25519Keys.generate();
  const data = new TextEncoder().encode('challenge');
  const sig = keys.sign(data);
  expect(verifyEd25519(keys.publicKeyHex, data, sig)).toBe(true);
  expect(verifyEd25519(Ed25519Keys.generate().publicKeyHex, data, sig)).toBe(false);
  expect(verifyEd25519(keys.publicKeyHex, new TextEncoder().encode('other'), sig)).toBe(false);
  expect(verifyEd25519('zz', data, sig)).toBe(false);
  expect(verifyEd25519(keys.publicKeyHex, data, new Uint8Array(3))).toBe(false);
});

test('coordinator receipts verify, and any change to them breaks the signature', () => {
  const coordinator = Ed25519Keys.generate();
  const node = Ed25519Keys.generate();
  const signed = signReceipt(coordinator, {
    runId: 'r',
    receiptId: 'r/0/0/0',
    nodeId: node.publicKeyHex,
    stage: 0,
    step: 0,
    microBatch: 0,
    tokens: 64,
    flops: 1e6,
  });
  expect(verifyReceipt(signed)).toBe(true);
  expect(verifyReceipt(signed, coordinator.publicKeyHex)).toBe(true);
  expect(verifyReceipt(signed, node.publicKeyHex)).toBe(false);
  expect(verifyReceipt({ ...signed, receipt: { ...signed.receipt, flops: 2e6 } })).toBe(false);
});
