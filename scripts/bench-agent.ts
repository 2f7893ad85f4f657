/**
 * The agent's own cost: CPU and memory while paused (it should all but vanish), and the share of each
 * step's wall time spent outside the GPU work while running at 100% (gate, receipt verification and the
 * ledger's fsync'd commit, timers). Real GPU work on dawn.node (lavapipe on CI machines).
 *
 *   npm run bench:agent [-- --json] [-- --seconds N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../main/agent/agent.js';
import { defaultSettings } from '../shared/dashboard/settings.js';
import { createGpuWork } from '../test/agent/gpu-work.js';
import { NODE_ID, testCoordinator, testReceipt } from '../test/agent/signing.js';
import { testDevice } from '../test/helpers/gpu.js';

const json = process.argv.includes('--json');
const secondsArg = process.argv.indexOf('--seconds');
const seconds = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 5;
const log = (line: string): void => {
  if (!json) console.error(line);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function pausedCost(dataDir: string): Promise<{ cpuPct: number; rssMb: number }> {
  const agent = await Agent.open({ dataDir, settings: { ...defaultSettings, dashboardPort: 0 } });
  agent.start();
  await agent.startDashboard({ staticDir: null, port: 0 });
  await agent.command({ type: 'pause', duration: 'indefinitely' });
  await sleep(1000);
  log(`paused: measuring CPU for ${seconds} s ...`);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  const rssMb = process.memoryUsage().rss / 1e6;
  await agent.stop();
  return { cpuPct: ((cpu.user + cpu.system) / 1000 / wallMs) * 100, rssMb };
}

interface Running {
  share: number;
  steps: number;
  stepMs: number;
  gateMs: number;
  receiptMs: number;
}

async function runningOverhead(dataDir: string): Promise<Running> {
  const { device } = await testDevice();
  const work = createGpuWork(device);
  await work.calibrate(30);
  const coordinator = testCoordinator();
  const agent = await Agent.open({
    dataDir,
    settings: { ...defaultSettings, runWhen: 'always' },
    trustedCoordinatorKeys: [coordinator.keyHex],
    nodeId: NODE_ID,
    pollHost: false,
  });
  agent.start();
  // Receipts are signed ahead of time: signing is the coordinator's cost, not the agent's.
  const receipts = Array.from({ length: 5000 }, (_, i) =>
    coordinator.sign(testReceipt(i, { receiptId: `bench-${i}` })),
  );
  log(`running: ${seconds} s of GPU steps through the agent's gate ...`);
  let busyMs = 0;
  let gateMs = 0;
  let receiptMs = 0;
  let steps = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000 && steps < receipts.length) {
    const g0 = performance.now();
    await agent.gate.waitUntilAllowed();
    const g1 = performance.now();
    const busy = await work.unit();
    busyMs += busy;
    const g2 = performance.now();
    await agent.gate.afterWork(busy);
    const g3 = performance.now();
    agent.receipts.accept(receipts[steps]!);
    receiptMs += performance.now() - g3;
    gateMs += g1 - g0 + (g3 - g2);
    steps++;
  }
  const wallMs = performance.now() - t0;
  await agent.stop();
  work.destroy();
  device.destroy();
  return {
    share: (wallMs - busyMs) / wallMs,
    steps,
    stepMs: wallMs / steps,
    gateMs: gateMs / steps,
    receiptMs: receiptMs / steps,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-agent-'));
try {
  const paused = await pausedCost(join(dir, 'paused'));
  log(`paused: ${paused.cpuPct.toFixed(2)}% of one core, RSS ${paused.rssMb.toFixed(0)} MB`);
  const running = await runningOverhead(join(dir, 'running'));
  log(
    `running: ${(running.share * 100).toFixed(2)}% of step time outside the GPU work ` +
      `(${running.steps} steps of ${running.stepMs.toFixed(1)} ms; per step: gate ${running.gateMs.toFixed(3)} ms, ` +
      `receipt check + ledger commit ${running.receiptMs.toFixed(3)} ms)`,
  );
  const result = {
    paused_cpu_pct: Number(paused.cpuPct.toFixed(3)),
    paused_rss_mb: Number(paused.rssMb.toFixed(1)),
    running_overhead_share: Number(running.share.toFixed(4)),
  };
  console.log(json ? JSON.stringify(result) : result);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
