import { createPublicKey, verify } from 'node:crypto';
import { canonicalReceiptBytes, type SignedReceipt } from '../../../shared/protocol/receipt.js';

/** Whether the coordinator's ed25519 signature over the canonical receipt bytes holds. */
export function receiptSignatureValid(signed: SignedReceipt): boolean {
  try {
    const key = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(signed.coordinatorKey, 'hex').toString('base64url') },
      format: 'jwk',
    });
    return verify(null, canonicalReceiptBytes(signed.receipt), key, Buffer.from(signed.signature, 'base64'));
  } catch {
    return false;
  }
}
