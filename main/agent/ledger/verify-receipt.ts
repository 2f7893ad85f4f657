import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import {
  canonicalStatementBytes,
  type SignedCreditStatement,
} from '../../../shared/protocol/credit-statement.js';
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

function signatureValid(keyHex: string, bytes: Uint8Array, signatureBase64: string): boolean {
  try {
    return verify(null, bytes, coordinatorKey(keyHex), Buffer.from(signatureBase64, 'base64'));
  } catch {
    return false;
  }
}

/** Whether the coordinator's ed25519 signature over the canonical receipt bytes holds. */
export function receiptSignatureValid(signed: SignedReceipt): boolean {
  return signatureValid(signed.coordinatorKey, canonicalReceiptBytes(signed.receipt), signed.signature);
}

/** Whether the coordinator's ed25519 signature over the canonical statement bytes holds. */
export function statementSignatureValid(signed: SignedCreditStatement): boolean {
  return signatureValid(signed.coordinatorKey, canonicalStatementBytes(signed.statement), signed.signature);
}
