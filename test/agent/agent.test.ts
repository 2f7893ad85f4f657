import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../main/agent/agent.js';
import { agentSnapshotSchema } from '../../shared/dashboard/contract.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { FakeClock } from './fake-clock.js';
import { NODE_ID, testCoordinator, testReceipt } from './signing.js';
import { openQuietAgent } from '../helpers/agent.js';

describe('Agent', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tributary-agent-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const coordinator = testCoordinator();
  const open = (clock = new FakeClock()): Promise<Agent> =>
    openQuietAgent({
      dataDir: dir,
      clock,
      trustedCoordinatorKeys: [coordinator.keyHex],
      nodeId: NODE_ID,
    });

  it('starts from defaults, waits for idle, and publishes snapshots that match the contract', async () => {
    const clock = new FakeClock();
    const agent = await open(clock);
    const seen: string[] = [];
    agent.onSnapshot((s) => seen.push(agentSnapshotSchema.parse(s).reason));
    agent.setInputs({ idleSeconds: 40 });
    agent.tick();
    expect(seen.at(-1)).toBe('Waiting: you used the computer 40 s ago; contributes after 3 min idle');
    agent.setInputs({ idleSeconds: 200 });
    agent.setStage({ index: 2, count: 8, firstBlock: 6, lastBlock: 8 }, 1e9);
    agent.setProgress({ step: 12, stepFraction: 0.5, totalSteps: 1000 });
    agent.addLoss(12, 3.1);
    agent.tick();
    const snap = agentSnapshotSchema.parse(agent.snapshot());
    expect(snap).toMatchObject({
      state: 'running',
      reason: 'Contributing',
      dutyCyclePct: 100,
      stage: { index: 2 },
      loss: [{ step: 12, loss: 3.1 }],
    });
    expect(snap.settings).toEqual(defaultSettings);
    await agent.stop();
  });

  it('keeps verified receipts, logs rejected ones, and shows the balance', async () => {
    const agent = await open();
    agent.receipts.accept(coordinator.sign(testReceipt(1)));
    agent.receipts.accept(coordinator.sign(testReceipt(2)));
    agent.receipts.accept(testCoordinator().sign(testReceipt(3)));
    agent.receipts.acceptStatement!(
      coordinator.state({ seq: 1, receipts: 2, confirmed: ['r-1'], confirmedFlops: testReceipt(1).flops }),
    );
    const wallet = agent.snapshot().wallet;
    expect(wallet).toMatchObject({
      confirmedFlops: testReceipt(1).flops,
      pendingFlops: testReceipt(2).flops,
    });
    expect(wallet.recentReceipts.map((r) => r.receiptId)).toEqual(['r-2', 'r-1']);
    expect(agent.exportCsv('events')).toMatch(/receipt-rejected,.*unknown coordinator key/);
    // Each applied statement is reconciled at once: the ledger holds what the coordinator confirmed.
    expect(agent.snapshot().wallet.reconciliation).toMatchObject({ matches: true, differenceFlops: 0 });
    // A statement that confirms a receipt this ledger never received.
    agent.receipts.acceptStatement!(
      coordinator.state({ seq: 2, receipts: 2, confirmed: ['r-7'], confirmedFlops: 1e13 }),
    );
    const reconciled = agentSnapshotSchema.parse(agent.snapshot()).wallet.reconciliation;
    expect(reconciled).toMatchObject({ matches: false, missingLocally: ['r-7'], missingFromStatement: [] });
    expect(reconciled?.summary).toMatch(
      /^Balance differs: 1 receipt\(s\) in the statement are not in your ledger; totals differ by/,
    );
    expect(agent.ledger.verify().ok).toBe(true);
    await agent.stop();
  });

  it('persists settings changes and the payout address; refuses invalid ones without losing the old', async () => {
    const agent = await open();
    expect(
      await agent.command({ type: 'updateSettings', patch: { dutyCyclePct: 40, pausePrograms: ['steam'] } }),
    ).toEqual({ ok: true });
    expect(await agent.command({ type: 'updateSettings', patch: { gpuTempLimitC: 20 } })).toEqual({
      ok: false,
      errors: ['gpuTempLimitC: the GPU temperature limit must be at least 40 °C'],
    });
    expect(
      await agent.command({
        type: 'setPayoutAddress',
        address: '0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed',
      }),
    ).toEqual({ ok: true });
    expect(agent.snapshot().wallet.payoutAddress).toBe('0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed');
    await agent.stop();

    const saved = JSON.parse(readFileSync(join(dir, 'settings.json'), 'utf8')) as Record<string, unknown>;
    expect(saved).toMatchObject({ dutyCyclePct: 40, pausePrograms: ['steam'], gpuTempLimitC: 80 });
    const reopened = await open();
    expect(reopened.snapshot().settings.dutyCyclePct).toBe(40);
    expect(reopened.snapshot().wallet.payoutAddress).toBe('0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed');
    await reopened.stop();
  });

  it('refuses to start on a broken settings file and leaves it as it was', async () => {
    writeFileSync(join(dir, 'settings.json'), '{"dutyCyclePct": 0}');
    await expect(open()).rejects.toThrow(
      /settings.json has invalid settings:\n {2}dutyCyclePct: the GPU load cap must be at least 5%/,
    );
    expect(readFileSync(join(dir, 'settings.json'), 'utf8')).toBe('{"dutyCyclePct": 0}');
  });

  it('closes the gate on stop, so no new work starts', async () => {
    const agent = await openQuietAgent({
      dataDir: dir,
      settings: { ...defaultSettings, runWhen: 'always' },
    });
    await agent.gate.waitUntilAllowed();
    await agent.stop();
    await agent.stop();
    let started = false;
    void agent.gate.waitUntilAllowed().then(() => (started = true));
    expect(await agent.command({ type: 'resume' })).toEqual({
      ok: false,
      errors: ['Tributary is shutting down.'],
    });
    agent.tick();
    await new Promise((r) => setTimeout(r, 50));
    expect(started).toBe(false);
  });
});
