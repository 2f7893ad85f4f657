/**
 * Child process for the kill test: appends to the ledger as fast as it can and prints the chain head after
 * every commit, until it is killed.
 */
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { NODE_ID, testCoordinator, testReceipt } from './signing.js';

const path = process.argv[2];
if (!path) throw new Error('usage: ledger-writer.ts <ledger path>');
const ledger = new Ledger(path);
const coordinator = testCoordinator();
const head = (): number =>
  (ledger.db.prepare('SELECT seq FROM chain_head').get() as { seq: number } | undefined)?.seq ?? 0;
process.stdout.write(`ready ${head()}\n`);
for (let i = 0; ; i++) {
  const id = `${process.pid}-${i}`;
  ledger.acceptReceipt(coordinator.sign(testReceipt(i, { receiptId: id, nodeId: NODE_ID })));
  ledger.recordWorkUnit({ runId: 'run-1', stage: 1, step: i, microBatch: 0, tokens: 512, busyMs: i * 0.25 });
  if (i % 2 === 0)
    ledger.applyStatement(coordinator.state({ seq: i / 2 + 1, receipts: i + 1, confirmed: [id] }));
  if (i % 7 === 0) ledger.recordEvent('tick', { i });
  process.stdout.write(`committed ${head()}\n`);
}
