import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { KeyStore } from '../identity/key-store.js';

/** The parts of Electron's safeStorage used; tests pass a fake. */
export interface SafeStorageLike {
  isEncryptionAvailable(): boolean;
  encryptString(plainText: string): Buffer;
  decryptString(encrypted: Buffer): string;
}

/**
 * The node's private key, encrypted with the OS keychain (Keychain, DPAPI, libsecret/kwallet) before it
 * touches the disk, in a file only the owner may read. Without a keychain it refuses rather than store the
 * key in the clear; headless machines use the CLI's 0600 key file instead.
 */
export class SafeStorageKeyStore implements KeyStore {
  constructor(
    private readonly safe: SafeStorageLike,
    readonly path: string,
  ) {}

  read(): string | null {
    if (!existsSync(this.path)) return null;
    this.requireEncryption();
    try {
      return this.safe.decryptString(Buffer.from(readFileSync(this.path, 'utf8').trim(), 'base64'));
    } catch (error) {
      throw new Error(
        `cannot decrypt the node key in ${this.path} (was it made by another user or machine?): ${(error as Error).message}`,
      );
    }
  }

  write(pem: string): void {
    this.requireEncryption();
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    writeFileSync(this.path, `${this.safe.encryptString(pem).toString('base64')}\n`, {
      mode: 0o600,
      flag: 'wx',
    });
    chmodSync(this.path, 0o600);
  }

  private requireEncryption(): void {
    if (!this.safe.isEncryptionAvailable()) {
      throw new Error('the OS keychain is not available, so the node key cannot be stored encrypted');
    }
  }
}
