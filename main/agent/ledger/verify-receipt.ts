import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { canonicalReceiptBytes, type SignedReceipt } from '../../../shared/protocol/receipt.js';

/** A run has one or a few coordinator keys; importing one costs more than the verification itself. */
const keys = new Map<string, KeyObject>();

function coordinatorKey(hex: string): KeyObject {
  let key = keys.get(hex);
  if (!key) {
    key = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(hex, 'hex').toString('base64url') },
      format: 'jwk',
    });
    if (keys.size > 64) keys.clear();
    keys.set(hex, key);
  }
  return key;
}

/** Whether the coordinator's ed25519 signature over the canonical receipt bytes holds. */
export function receiptSignatureValid(signed: SignedReceipt): boolean {
  try {
    const key = coordinatorKey(signed.coordinatorKey);
    return verify(null, canonicalReceiptBytes(signed.receipt), key, Buffer.from(signed.signature, 'base64'));
  } catch {
    return false;
  }
}
