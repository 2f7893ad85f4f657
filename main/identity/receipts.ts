import {
  canonicalReceiptBytes,
  signedReceiptSchema,
  type SignedReceipt,
} from '../../shared/protocol/receipt.js';
import { verifyEd25519 } from './ed25519.js';

/**
 * True when `signed` is well-formed and its signature is the coordinator's over the canonical receipt bytes.
 * Pass `coordinatorKey` to also pin which coordinator must have signed it.
 */
export function verifyReceipt(signed: SignedReceipt, coordinatorKey?: string): boolean {
  if (!signedReceiptSchema.safeParse(signed).success) return false;
  if (coordinatorKey !== undefined && signed.coordinatorKey !== coordinatorKey) return false;
  return verifyEd25519(
    signed.coordinatorKey,
    canonicalReceiptBytes(signed.receipt),
    Buffer.from(signed.signature, 'base64'),
  );
}
