import { afterAll, describe, expect, it } from 'vitest';
import type { CoordinatorStatus } from '../../coordinator/coordinator.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';
import { closes, misbehavingStage, type Lie } from './misbehaving-stage.js';

const { dir, cleanup } = tempDir('tributary-poison-');
afterAll(cleanup);

/**
 * One liar joins first (so it holds `stage`), honest nodes follow: the liar's numbers must stop at the
 * coordinator, the liar must be the one dropped, and training must finish on the honest nodes.
 */
async function attack(
  name: string,
  lie: Lie,
  stages: number,
  honest: number,
): Promise<{
  status: CoordinatorStatus;
  losses: number[];
  liar: Array<{ code: number; reason: string }>;
  honest: Array<{ code: number; reason: string }>;
}> {
  const coordinator = await startCoordinator(
    tinyConfig({ stages, steps: 2, banMs: 600_000 }),
    `${dir}/${name}`,
  );
  const bad = startNode(coordinator.url, 'cpu', { createStage: misbehavingStage(lie) });
  const liar = closes(bad);
  await until('the liar is placed', () => bad.status.stage !== null, 60_000);
  const good = Array.from({ length: honest }, () => startNode(coordinator.url, 'cpu'));
  const goodCloses = good.map(closes);
  await coordinator.finished;
  // Closes during the run only: stopping the nodes closes them too, not always with 1000.
  const honestCloses = goodCloses.flat().filter((c) => c.code !== 1000 && c.code !== 1001);
  await Promise.all([bad, ...good].map((n) => n.stop()));
  const status = coordinator.status();
  const losses = coordinator.store.losses().map((l) => l.loss);
  await coordinator.close();
  return {
    status,
    losses,
    liar,
    honest: honestCloses,
  };
}

describe('poisoned values are refused at the coordinator and their sender dropped', () => {
  it('a stage-1 node sending NaN activations is dropped; the honest next stage is not', async () => {
    const { status, liar, honest } = await attack('nan-activations', 'nan-activations', 2, 2);
    expect(liar[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/activations holding NaN/) });
    expect(honest).toEqual([]);
    expect(status).toMatchObject({ state: 'done', step: 2 });
    expect(Number.isFinite(status.loss)).toBe(true);
  }, 120_000);

  it('NaN gradients are refused, their sender dropped, and the step replayed without them', async () => {
    const { status, liar, honest } = await attack('nan-gradients', 'nan-gradients', 1, 1);
    expect(liar[0]).toMatchObject({
      code: 4001,
      reason: expect.stringMatching(/gradients holding (NaN|non-finite)/),
    });
    expect(honest).toEqual([]);
    expect(status).toMatchObject({ state: 'done', step: 2 });
  }, 120_000);

  it('a loss of -1e300 never becomes the run loss; its sender is dropped', async () => {
    const { losses, liar, honest } = await attack('absurd-loss', 'absurd-loss', 1, 1);
    expect(liar[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/loss of -1e\+300/) });
    expect(honest).toEqual([]);
    expect(losses.every((l) => l > 0 && l < 20)).toBe(true);
  }, 120_000);
});
