import { afterAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../coordinator/coordinator.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';
import { closes, misbehavingStage } from './misbehaving-stage.js';

const { dir, cleanup } = tempDir('tributary-verify-');
afterAll(cleanup);

function verdicts(coordinator: Coordinator, verdict: string): Promise<number> {
  return coordinator.metrics.verifications.get().then((m) => {
    return m.values.filter((v) => v.labels.verdict === verdict).reduce((a, v) => a + v.value, 0);
  });
}

/** An honest run of `nodes` CPU nodes on two stages; its losses and verification verdicts. */
async function honestRun(name: string, fraction: number, nodes: number) {
  const coordinator = await startCoordinator(
    tinyConfig({ steps: 3, checkpointEvery: 100, verification: { fraction, tolerance: 1e-3 } }),
    `${dir}/${name}`,
  );
  const all = Array.from({ length: nodes }, () => startNode(coordinator.url, 'cpu'));
  const dropped = all.map(closes);
  // Every node placed before the first step, so both runs route over the same replicas.
  await coordinator.finished;
  await Promise.all(all.map((n) => n.stop()));
  const result = {
    losses: coordinator.store.losses().map((l) => l.loss),
    agreed: await verdicts(coordinator, 'agreed'),
    wrong: await verdicts(coordinator, 'wrong'),
    disputed: await verdicts(coordinator, 'disputed'),
    dropped: dropped.flat().filter((c) => c.code === 4001).length,
  };
  await coordinator.close();
  return result;
}

describe('verification of work: a second replica recomputes sampled forwards', () => {
  it('a node returning random activations is caught, dropped, banned and its unverified credit revoked', async () => {
    const coordinator = await startCoordinator(
      // Steps to spare: on a loaded machine the honest joiners take several steps to be placed.
      tinyConfig({ steps: 24, banMs: 600_000, verification: { fraction: 1, tolerance: 1e-3 } }),
      `${dir}/liar`,
    );
    const liar = startNode(coordinator.url, 'cpu', { createStage: misbehavingStage('random-activations') });
    const liarCloses = closes(liar);
    await until('the liar is placed', () => liar.status.stage !== null, 60_000);
    const first = startNode(coordinator.url, 'cpu');
    // Alone on its stage the liar cannot be checked: its first step commits unverified.
    await until(
      'a step commits with the liar alone on its stage',
      () => coordinator.status().step >= 1,
      60_000,
    );
    const honest = [first, ...Array.from({ length: 2 }, () => startNode(coordinator.url, 'cpu'))];
    const honestCloses = honest.map(closes);
    await coordinator.finished;
    await Promise.all([liar, ...honest].map((n) => n.stop()));

    expect(liarCloses[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/outvoted/) });
    expect(honestCloses.flat().filter((c) => c.code === 4001)).toEqual([]);
    expect(coordinator.status()).toMatchObject({ state: 'done', step: 24 });
    const liarReceipts = coordinator.store.receiptStates(liar.nodeId);
    expect(liarReceipts.length).toBeGreaterThan(0);
    expect(liarReceipts.every((r) => r.verification === 'revoked')).toBe(true);
    const statements = coordinator.store.statementsSince(liar.nodeId, 0);
    const revoked = statements.flatMap((s) => s.statement.revoked.map((r) => r.receiptId));
    expect(revoked.sort()).toEqual(liarReceipts.map((r) => r.receiptId).sort());
    expect(statements.at(-1)!.statement.confirmedFlops).toBe(0);
    for (const node of honest) {
      const states = coordinator.store.receiptStates(node.nodeId);
      expect(states.some((r) => r.verification === 'revoked')).toBe(false);
    }
    const balances = coordinator.store.balances();
    expect(balances.find((b) => b.nodeId === liar.nodeId)?.flops ?? 0).toBe(0);
    // One failed check is enough: it is dropped at its first checked forward.
    expect(await verdicts(coordinator, 'wrong')).toBe(1);
    await coordinator.close();
  }, 240_000);

  it('on a three-replica stage a referee outvotes a node that makes up a plausible loss', async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ stages: 1, steps: 24, banMs: 600_000, verification: { fraction: 1, tolerance: 1e-3 } }),
      `${dir}/referee`,
    );
    const honest = Array.from({ length: 2 }, () => startNode(coordinator.url, 'cpu'));
    const honestCloses = honest.map(closes);
    await until('two honest replicas train', () => coordinator.status().step >= 1, 60_000);
    const liar = startNode(coordinator.url, 'cpu', { createStage: misbehavingStage('random-activations') });
    const liarCloses = closes(liar);
    await coordinator.finished;
    await Promise.all([liar, ...honest].map((n) => n.stop()));

    expect(liarCloses[0]).toMatchObject({
      code: 4001,
      reason: expect.stringMatching(/outvoted .*a third replica sided with the other/),
    });
    expect(honestCloses.flat().filter((c) => c.code === 4001)).toEqual([]);
    expect(coordinator.status()).toMatchObject({ state: 'done', step: 24 });
    // Every forward it ran was checked, so none of its work was ever credited.
    expect(coordinator.store.receiptStates(liar.nodeId)).toEqual([]);
    for (const node of honest) {
      const states = coordinator.store.receiptStates(node.nodeId);
      expect(states.map((r) => r.verification)).not.toContain('revoked');
      // Their statements say which confirmed receipts were verified, so the ledger stores it too.
      const verified = states.filter((r) => r.verification === 'verified').map((r) => r.receiptId);
      const stated = coordinator.store
        .statementsSince(node.nodeId, 0)
        .flatMap((s) => s.statement.verified ?? []);
      expect(verified.length).toBeGreaterThan(0);
      expect(stated.sort()).toEqual(verified.sort());
    }
    await coordinator.close();
  }, 240_000);

  // Stage 2 is the last of two (its backward starts from the loss) or the middle of three.
  for (const [dataPlane, stages] of [
    ['relay', 2],
    ['p2p', 2],
    ['relay', 3],
  ] as const)
    it(`a node that runs its forwards honestly but sends back a wrong input gradient is caught by the backward's recompute (${dataPlane}, stage 2 of ${stages})`, async () => {
      const coordinator = await startCoordinator(
        tinyConfig({
          stages,
          model: { vocabSize: 256, contextLength: 16, width: 32, heads: 2, layers: 3, mlpRatio: 4 },
          steps: 12,
          banMs: 600_000,
          dataPlane,
          verification: { fraction: 0.5, tolerance: 1e-3 },
          runId: `verify-backward-${dataPlane}-${stages}`,
        }),
        `${dir}/backward-${dataPlane}-${stages}`,
      );
      // Stage 1 first, so the liar takes stage 2, whose backward sends a gradient back.
      const first = startNode(coordinator.url, 'cpu');
      await until('stage 1 is placed', () => first.status.stage !== null, 60_000);
      const liar = startNode(coordinator.url, 'cpu', {
        createStage: misbehavingStage('noisy-input-gradients'),
      });
      const liarCloses = closes(liar);
      await until('the liar is placed', () => liar.status.stage !== null, 60_000);
      expect(liar.status.stage?.index).toBe(1);
      // Placement fills every stage to two replicas first: the liar's stage gets an honest one.
      const more = Array.from({ length: 2 * stages - 2 }, () => startNode(coordinator.url, 'cpu'));
      const honest = [first, ...more];
      const honestCloses = honest.map(closes);
      await coordinator.finished;
      await Promise.all([liar, ...honest].map((n) => n.stop()));

      expect(liarCloses[0]).toMatchObject({
        code: 4001,
        reason: expect.stringMatching(/outvoted on the backward of micro-batch \d+ of step \d+ on stage 2/),
      });
      expect(honestCloses.flat().filter((c) => c.code === 4001)).toEqual([]);
      expect(coordinator.status()).toMatchObject({ state: 'done', step: 12 });
      await coordinator.close();
    }, 240_000);

  it('peer to peer, a sampled forward is relayed and checked: a liar is caught, honest nodes keep training', async () => {
    const coordinator = await startCoordinator(
      tinyConfig({
        steps: 12,
        banMs: 600_000,
        dataPlane: 'p2p',
        verification: { fraction: 0.5, tolerance: 1e-3 },
        runId: 'verify-p2p',
      }),
      `${dir}/p2p`,
    );
    const liar = startNode(coordinator.url, 'cpu', { createStage: misbehavingStage('random-activations') });
    const liarCloses = closes(liar);
    await until('the liar is placed', () => liar.status.stage !== null, 60_000);
    const honest = Array.from({ length: 3 }, () => startNode(coordinator.url, 'cpu'));
    const honestCloses = honest.map(closes);
    await coordinator.finished;
    await Promise.all([liar, ...honest].map((n) => n.stop()));

    expect(liarCloses[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/outvoted/) });
    expect(honestCloses.flat().filter((c) => c.code === 4001)).toEqual([]);
    expect(coordinator.status()).toMatchObject({ state: 'done', step: 12 });
    expect(await verdicts(coordinator, 'agreed')).toBeGreaterThan(0);
    // Only sampled forwards cross the coordinator: the rest still go between the nodes.
    expect(honest.some((n) => (n.status.peerBytes ?? 0) > 0)).toBe(true);
    await coordinator.close();
  }, 240_000);

  it('honest replicas are never flagged and the losses equal a run without verification', async () => {
    const off = await honestRun('off', 0, 4);
    const on = await honestRun('on', 1, 4);
    expect(on).toMatchObject({ wrong: 0, disputed: 0, dropped: 0 });
    expect(on.agreed).toBeGreaterThan(0);
    expect(off.agreed).toBe(0);
    expect(on.losses).toHaveLength(3);
    on.losses.forEach((loss, i) => expect(loss).toBeCloseTo(off.losses[i]!, 5));
  }, 240_000);
});
