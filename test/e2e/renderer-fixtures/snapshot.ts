import type { AgentSnapshot, ReceiptRow } from '../../../shared/dashboard/contract.js';
import { defaultSettings } from '../../../shared/dashboard/settings.js';

const DAY_MS = 86_400_000;

/** The network the sample contributor accepted. */
export const NETWORK = {
  url: 'ws://127.0.0.1:9',
  coordinatorKey: '3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29',
};

function receipts(now: number): ReceiptRow[] {
  const statuses: ReceiptRow['status'][] = [
    'pending',
    'pending',
    'confirmed',
    'confirmed',
    'confirmed',
    'revoked',
  ];
  return statuses.map((status, i) => ({
    receiptId: `r-${1000 - i}`,
    runId: 'shakespeare-run-1',
    issuedAt: new Date(now - i * 7 * 60_000).toISOString(),
    stage: 2,
    step: 412 - i,
    tokens: 8192,
    flops: 3.1e12 + i * 1e10,
    status,
    // A second replica recomputed two of the confirmed ones and agreed.
    verified: i === 2 || i === 3,
  }));
}

/** A contributor four days in: running stage 3 of 8 with a falling loss curve and a few receipts. */
export function sampleSnapshot(now = Date.parse('2026-11-25T15:30:00Z')): AgentSnapshot {
  return {
    version: 1,
    at: new Date(now).toISOString(),
    state: 'running',
    reasonCode: 'running',
    reason: 'Training stage 3 of 8 (blocks 6–8) at 85%: you have been away for 12 min',
    resumeAt: null,
    dutyCyclePct: 85,
    telemetry: {
      gpuTempC: 71,
      gpuUtilPct: 83,
      gpuPowerW: 182,
      vramUsedMb: 5_400,
      vramTotalMb: 12_288,
      cpuTempC: 55,
      thermalState: 'nominal',
      source: 'simulated',
    },
    stage: { index: 2, count: 8, firstBlock: 5, lastBlock: 7 },
    progress: { step: 412, stepFraction: 0.62, totalSteps: 2000 },
    loss: Array.from({ length: 42 }, (_, i) => ({
      step: i * 10,
      loss: 1.55 + 2.9 * Math.exp(-i / 9) + 0.04 * Math.sin(i),
      // A held-out evaluation after every 100 steps, a little above the training loss.
      ...(i % 10 === 9 ? { validation: 1.65 + 2.9 * Math.exp(-i / 9) } : {}),
    })),
    network: {
      url: NETWORK.url,
      coordinatorKey: NETWORK.coordinatorKey,
      phase: 'training',
      detail: 'Training stage 3 of 8 (blocks 6–8)',
      retryAt: null,
      tokensPerSecond: 5_320,
    },
    rates: { tokensPerSecond: 412.5, flopsPerHour: 1.9e15 },
    wallet: {
      confirmedFlops: 8.46e15,
      pendingFlops: 6.2e12,
      revokedFlops: 3.1e12,
      payoutAddress: null,
      earnings: [3.1e15, 2.2e15, 0.9e15, 2.3e15].map((flops, i) => ({
        day: new Date(now - (3 - i) * DAY_MS).toISOString().slice(0, 10),
        flops,
      })),
      recentReceipts: receipts(now),
      reconciliation: {
        at: new Date(now - 600_000).toISOString(),
        matches: false,
        summary: 'The coordinator counts 3.10 TFLOP less: 1 receipt it has not confirmed yet.',
        differenceFlops: -3.1e12,
        missingLocally: [],
        missingFromStatement: ['r-1000'],
      },
    },
    settings: {
      ...defaultSettings,
      dutyCyclePct: 85,
      pausePrograms: ['steam', 'Code.exe'],
      vramCapMb: 8_192,
      networks: [NETWORK],
      activeNetwork: NETWORK.url,
    },
    inventory: {
      gpus: [{ vendor: 'NVIDIA', model: 'GeForce RTX 3060', vramMb: 12_288 }],
      cpu: 'AMD Ryzen 5 5600X',
      cores: 12,
      memoryMb: 32_768,
    },
  };
}
