import { generateKeyPairSync, sign } from 'node:crypto';
import {
  canonicalStatementBytes,
  type CreditStatement,
  type SignedCreditStatement,
} from '../../shared/protocol/credit-statement.js';
import {
  canonicalReceiptBytes,
  type SignedReceipt,
  type WorkReceipt,
} from '../../shared/protocol/receipt.js';

export interface TestCoordinator {
  keyHex: string;
  sign(receipt: WorkReceipt): SignedReceipt;
  state(statement: Partial<CreditStatement> & Pick<CreditStatement, 'seq'>): SignedCreditStatement;
}

/** A coordinator key pair that signs receipts and credit statements the way the real coordinator does. */
export function testCoordinator(): TestCoordinator {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyHex = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('hex');
  return {
    keyHex,
    sign: (receipt) => ({
      receipt,
      signature: sign(null, canonicalReceiptBytes(receipt), privateKey).toString('base64'),
      coordinatorKey: keyHex,
    }),
    state: (partial) => {
      const statement: CreditStatement = {
        version: 1,
        runId: 'run-1',
        nodeId: NODE_ID,
        issuedAt: new Date(Date.UTC(2026, 10, 20, 13)).toISOString(),
        receipts: 0,
        confirmed: [],
        revoked: [],
        confirmedFlops: 0,
        revokedFlops: 0,
        pendingFlops: 0,
        ...partial,
      };
      return {
        statement,
        signature: sign(null, canonicalStatementBytes(statement), privateKey).toString('base64'),
        coordinatorKey: keyHex,
      };
    },
  };
}

export const NODE_ID = 'ab'.repeat(32);

export function testReceipt(n: number, overrides: Partial<WorkReceipt> = {}): WorkReceipt {
  return {
    version: 1,
    runId: 'run-1',
    receiptId: `r-${n}`,
    nodeId: NODE_ID,
    stage: 1,
    step: n,
    microBatch: n % 4,
    tokens: 512,
    flops: 1.5e12 + n,
    issuedAt: new Date(Date.UTC(2026, 10, 20, 12, 0, n % 60)).toISOString(),
    ...overrides,
  };
}
