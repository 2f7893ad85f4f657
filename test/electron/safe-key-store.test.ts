import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadOrCreateKeys } from '../../main/identity/key-store.js';
import { SafeStorageKeyStore, type SafeStorageLike } from '../../main/electron/safe-key-store.js';

/** Stands in for the OS keychain: a reversible scramble, so the file never holds the PEM as is. */
function fakeKeychain(available = true): SafeStorageLike {
  const flip = (b: Buffer) => Buffer.from(b.map((x) => x ^ 0x5a));
  return {
    isEncryptionAvailable: () => available,
    encryptString: (text) => flip(Buffer.from(text, 'utf8')),
    decryptString: (data) => {
      const text = flip(data).toString('utf8');
      if (!text.startsWith('-----BEGIN')) throw new Error('bad ciphertext');
      return text;
    },
  };
}

describe('node key in the OS keychain', () => {
  it('creates the key once, stores it encrypted and owner-only, and reads the same key back', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'tributary-key-')), 'keys', 'node-key.enc');
    const first = loadOrCreateKeys(new SafeStorageKeyStore(fakeKeychain(), path));
    const again = loadOrCreateKeys(new SafeStorageKeyStore(fakeKeychain(), path));
    expect(again.publicKeyHex).toBe(first.publicKeyHex);
    expect(readFileSync(path, 'utf8')).not.toContain('PRIVATE KEY');
    if (process.platform !== 'win32') expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('refuses to work without a keychain, and says why a key cannot be decrypted', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-key-'));
    expect(() => loadOrCreateKeys(new SafeStorageKeyStore(fakeKeychain(false), join(dir, 'a.enc')))).toThrow(
      /keychain is not available/,
    );
    writeFileSync(join(dir, 'b.enc'), Buffer.from('garbage').toString('base64'));
    expect(() => new SafeStorageKeyStore(fakeKeychain(), join(dir, 'b.enc')).read()).toThrow(
      /cannot decrypt/,
    );
  });
});
