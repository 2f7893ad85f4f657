import { z } from 'zod';
import { canonicalJson, coordinatorSignatureShape } from './receipt.js';

const receiptId = z.string().min(1).max(128);
const flops = z.number().nonnegative().finite();

/**
 * The coordinator's signed word on a node's credit: which receipts it confirmed or revoked since its last
 * statement, and its running totals. `seq` counts this node's statements (1, 2, 3, ...) and `receipts` is how
 * many receipts the coordinator has issued to the node in the run so far, so a ledger that lost its newest
 * entries holds fewer receipts than its own newest statement says it was sent.
 */
export const creditStatementSchema = z
  .object({
    version: z.literal(1),
    runId: z.string().min(1).max(128),
    nodeId: z.string().regex(/^[0-9a-f]{64}$/),
    seq: z.number().int().min(1),
    issuedAt: z.iso.datetime(),
    receipts: z.number().int().min(0),
    confirmed: z.array(receiptId).max(4096),
    /** Those of `confirmed` whose work a second replica recomputed and agreed with; absent when none. */
    verified: z.array(receiptId).max(4096).optional(),
    revoked: z.array(z.object({ receiptId, reason: z.string().max(200) }).strict()).max(4096),
    confirmedFlops: flops,
    revokedFlops: flops,
    pendingFlops: flops,
  })
  .strict();
export type CreditStatement = z.infer<typeof creditStatementSchema>;

/** The signature is over canonicalStatementBytes(statement). */
export const signedCreditStatementSchema = z
  .object({ statement: creditStatementSchema, ...coordinatorSignatureShape })
  .strict();
export type SignedCreditStatement = z.infer<typeof signedCreditStatementSchema>;

/** A domain tag keeps a statement's signature from ever verifying as a receipt's, and the reverse. */
export function canonicalStatementBytes(statement: CreditStatement): Uint8Array {
  return new TextEncoder().encode(canonicalJson({ creditStatement: statement }));
}
