import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { canonicalJson } from '../../../shared/protocol/receipt.js';
import { verifyEd25519 } from '../../identity/ed25519.js';

/** Signs the chain head: the node's own key, so the head cannot be rewritten without it. */
export interface HeadSigner {
  readonly publicKeyHex: string;
  sign(data: Uint8Array): Uint8Array;
}

const headSchema = z
  .object({
    seq: z.number().int().min(0),
    hash: z.string().regex(/^[0-9a-f]{64}$/),
    nodeId: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .nullable(),
    signature: z.string().max(128).nullable(),
  })
  .strict();
export type LedgerHead = z.infer<typeof headSchema>;

/**
 * The chain head kept beside the ledger, outside SQLite: deleting the newest rows and rewriting the in-file
 * head leaves this one ahead of the chain. Its sequence only ever grows.
 */
export function headPath(ledgerPath: string): string {
  return `${ledgerPath}.head`;
}

function headBytes(seq: number, hash: string): Uint8Array {
  return new TextEncoder().encode(canonicalJson({ ledgerHead: { seq, hash } }));
}

/** Atomic (temp file + rename) so a kill mid-write leaves the previous head, which only lags the chain. */
export function writeHead(ledgerPath: string, seq: number, hash: string, signer?: HeadSigner): void {
  const head: LedgerHead = {
    seq,
    hash,
    nodeId: signer?.publicKeyHex ?? null,
    signature: signer ? Buffer.from(signer.sign(headBytes(seq, hash))).toString('base64') : null,
  };
  const path = headPath(ledgerPath);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(head)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export type HeadRead =
  { kind: 'absent' } | { kind: 'invalid'; why: string } | { kind: 'ok'; head: LedgerHead };

export function readHead(ledgerPath: string): HeadRead {
  let text: string;
  try {
    text = readFileSync(headPath(ledgerPath), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    return { kind: 'invalid', why: (err as Error).message };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { kind: 'invalid', why: 'it is not JSON' };
  }
  const parsed = headSchema.safeParse(json);
  if (!parsed.success) return { kind: 'invalid', why: 'it is not a chain head record' };
  const head = parsed.data;
  if ((head.nodeId === null) !== (head.signature === null))
    return { kind: 'invalid', why: 'its signature is missing' };
  if (
    head.nodeId !== null &&
    !verifyEd25519(head.nodeId, headBytes(head.seq, head.hash), Buffer.from(head.signature!, 'base64'))
  )
    return { kind: 'invalid', why: 'its signature does not verify (it was forged or edited)' };
  return { kind: 'ok', head };
}
