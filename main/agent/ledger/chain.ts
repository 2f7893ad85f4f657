import { createHash } from 'node:crypto';
import { canonicalJson } from '../../../shared/protocol/receipt.js';

export const GENESIS_HASH = '0'.repeat(64);

export type RowValue = string | number | null;

/** sha256 over the canonical JSON of the row (its table, seq, every column and the previous hash). */
export function rowHash(table: string, row: Record<string, RowValue>): string {
  const { hash: _hash, ...content } = row;
  return createHash('sha256')
    .update(canonicalJson({ table, ...content }))
    .digest('hex');
}
