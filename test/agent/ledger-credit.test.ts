import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { quiet, startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';
import { openQuietAgent } from '../helpers/agent.js';

const { dir, cleanup } = tempDir('tributary-credit-');
afterAll(cleanup);

/**
 * Credit end to end against a real coordinator: every receipt arrives pending, the coordinator's signed
 * statement confirms it once its step commits, the ledger verifies with the statements in it, and the
 * payout address reaches the coordinator.
 */
describe('credit confirmation', () => {
  it('confirms every committed receipt with a signed statement and registers the payout address', async () => {
    const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 3 }), join(dir, 'coordinator'));
    const keys = Ed25519Keys.generate();
    const agent = await openQuietAgent({
      dataDir: join(dir, 'node'),
      nodeId: keys.publicKeyHex,
      headSigner: keys,
      trustedCoordinatorKeys: [coordinator.publicKey],
      logger: quiet,
    });
    const address = '0x52908400098527886E0F7030069857D2E4169EE7';
    agent.ledger.setPayoutAddress(address);
    const node = startNode(coordinator.url, 'cpu', {
      keys,
      sink: agent.receipts,
      payoutAddress: () => agent.ledger.payoutAddress(),
    });
    try {
      await coordinator.finished;
      const issued = coordinator.status().receipts;
      await until(
        'every receipt confirmed',
        () =>
          agent.ledger.balance().confirmedFlops > 0 &&
          agent.ledger.receipts().every((r) => r.status === 'confirmed') &&
          agent.ledger.receipts().length === issued,
        30_000,
      );
      expect(agent.ledger.balance().pendingFlops).toBe(0);
      const newest = agent.ledger.db
        .prepare('SELECT body FROM statements ORDER BY seq DESC LIMIT 1')
        .get() as {
        body: string;
      };
      expect(JSON.parse(newest.body)).toMatchObject({ nodeId: keys.publicKeyHex, receipts: issued });
      expect(agent.ledger.verify()).toMatchObject({ ok: true, problems: [] });
      expect(coordinator.store.payoutAddress(keys.publicKeyHex)).toBe(address);
    } finally {
      await node.stop();
      await agent.stop();
      await coordinator.close();
    }
  }, 120_000);
});
