import {
  canonicalStatementBytes,
  type CreditStatement,
  type SignedCreditStatement,
} from '../shared/protocol/credit-statement.js';
import { canonicalReceiptBytes, type SignedReceipt, type WorkReceipt } from '../shared/protocol/receipt.js';

/** The coordinator's signing identity; the CLI builds it from main/identity, tests from a generated key. */
export interface CoordinatorKeys {
  readonly publicKeyHex: string;
  sign(data: Uint8Array): Uint8Array;
}

/** Checks a node's ed25519 signature; injected so the coordinator shares main/identity's implementation. */
export type VerifySignature = (publicKeyHex: string, data: Uint8Array, signature: Uint8Array) => boolean;

/** The id of the unit (run, step, stage, micro-batch): the same unit can never be credited twice. */
export function receiptId(runId: string, step: number, stage: number, microBatch: number): string {
  return `${runId}/${step}/${stage}/${microBatch}`;
}

export function signReceipt(
  keys: CoordinatorKeys,
  fields: Omit<WorkReceipt, 'version' | 'issuedAt'>,
): SignedReceipt {
  const receipt: WorkReceipt = { version: 1, ...fields, issuedAt: new Date().toISOString() };
  const signature = Buffer.from(keys.sign(canonicalReceiptBytes(receipt))).toString('base64');
  return { receipt, signature, coordinatorKey: keys.publicKeyHex };
}

export function signStatement(
  keys: CoordinatorKeys,
  fields: Omit<CreditStatement, 'version' | 'issuedAt'>,
): SignedCreditStatement {
  const statement: CreditStatement = { version: 1, ...fields, issuedAt: new Date().toISOString() };
  const signature = Buffer.from(keys.sign(canonicalStatementBytes(statement))).toString('base64');
  return { statement, signature, coordinatorKey: keys.publicKeyHex };
}
