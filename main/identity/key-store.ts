import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Ed25519Keys } from './ed25519.js';

/**
 * Where a node keeps its private key. Headless nodes use a 0600 file; the Electron shell can implement this
 * over `safeStorage` so the key is encrypted with the OS keychain.
 */
export interface KeyStore {
  /** The stored PKCS#8 PEM, or null when none exists yet. */
  read(): string | null;
  write(pem: string): void;
}

export class FileKeyStore implements KeyStore {
  constructor(readonly path: string) {}

  read(): string | null {
    if (!existsSync(this.path)) return null;
    if (process.platform !== 'win32') {
      const mode = statSync(this.path).mode & 0o777;
      if (mode & 0o077)
        throw new Error(
          `key file ${this.path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`,
        );
    }
    return readFileSync(this.path, 'utf8');
  }

  write(pem: string): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    writeFileSync(this.path, pem, { mode: 0o600, flag: 'wx' });
    chmodSync(this.path, 0o600);
  }
}

export class MemoryKeyStore implements KeyStore {
  private pem: string | null = null;
  read(): string | null {
    return this.pem;
  }
  write(pem: string): void {
    this.pem = pem;
  }
}

/** The store's key, created and saved on first use. */
export function loadOrCreateKeys(store: KeyStore): Ed25519Keys {
  const pem = store.read();
  if (pem !== null) return Ed25519Keys.fromPem(pem);
  const keys = Ed25519Keys.generate();
  store.write(keys.toPem());
  return keys;
}
