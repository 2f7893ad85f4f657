import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';

/** DER prefix of an ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** An ed25519 key pair: the node's (or coordinator's) identity. The public key, hex, is its id. */
export class Ed25519Keys {
  readonly publicKeyHex: string;

  private constructor(private readonly privateKey: KeyObject) {
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    this.publicKeyHex = spki.subarray(SPKI_PREFIX.length).toString('hex');
  }

  static generate(): Ed25519Keys {
    return new Ed25519Keys(generateKeyPairSync('ed25519').privateKey);
  }

  /** From a PKCS#8 PEM string, as `toPem()` writes it. */
  static fromPem(pem: string): Ed25519Keys {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`key is ${key.asymmetricKeyType}, not ed25519`);
    return new Ed25519Keys(key);
  }

  toPem(): string {
    return this.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  }

  sign(data: Uint8Array): Uint8Array {
    return sign(null, data, this.privateKey);
  }

  /** The 32-byte private seed (the tail of PKCS#8): the same key as a libp2p identity. */
  seed(): Uint8Array {
    return new Uint8Array(this.privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32));
  }
}

/** Checks an ed25519 signature against a raw public key in hex; false (never a throw) for malformed input. */
export function verifyEd25519(publicKeyHex: string, data: Uint8Array, signature: Uint8Array): boolean {
  if (!/^[0-9a-f]{64}$/.test(publicKeyHex)) return false;
  try {
    const key = createPublicKey({
      key: Buffer.concat([SPKI_PREFIX, Buffer.from(publicKeyHex, 'hex')]),
      format: 'der',
      type: 'spki',
    });
    return verify(null, data, key, signature);
  } catch {
    return false;
  }
}
