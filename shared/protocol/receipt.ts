import { z } from 'zod';

/** A unit of verified work, as the coordinator states it. Credits are in FLOPs (forward + backward). */
export const workReceiptSchema = z
  .object({
    version: z.literal(1),
    runId: z.string().min(1).max(128),
    receiptId: z.string().min(1).max(128),
    /** The node's ed25519 public key, hex (32 bytes, 64 chars). */
    nodeId: z.string().regex(/^[0-9a-f]{64}$/),
    stage: z.number().int().min(0),
    step: z.number().int().min(0),
    microBatch: z.number().int().min(0),
    tokens: z.number().int().min(0),
    flops: z.number().nonnegative().finite(),
    issuedAt: z.iso.datetime(),
  })
  .strict();
export type WorkReceipt = z.infer<typeof workReceiptSchema>;

/** The coordinator's signature beside what it signs: ed25519, base64, and its public key, hex. */
export const coordinatorSignatureShape = {
  signature: z
    .string()
    .regex(/^[A-Za-z0-9+/]+={0,2}$/)
    .max(128),
  coordinatorKey: z.string().regex(/^[0-9a-f]{64}$/),
};

/** The signature is over canonicalReceiptBytes(receipt). */
export const signedReceiptSchema = z
  .object({ receipt: workReceiptSchema, ...coordinatorSignatureShape })
  .strict();
export type SignedReceipt = z.infer<typeof signedReceiptSchema>;

/** JSON.parse that answers null for text that is not JSON, for input checked by a schema next. */
export function parseJsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** JSON with keys sorted at every level, so signer and verifier hash the same bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function canonicalReceiptBytes(receipt: WorkReceipt): Uint8Array {
  return new TextEncoder().encode(canonicalJson(receipt));
}
