/**
 * Where nodes should train. A stage's rate is the micro-batches per second its replicas sustain together;
 * the pipeline runs at its slowest stage's rate. Joiners go to the lowest-rate stage (Petals' and SWARM's
 * rule); an existing replica is moved only when that raises the bottleneck by a clear margin, so placement
 * does not flap on noisy measurements.
 */
export interface PlacedPeer {
  id: string;
  stage: number;
  /** FLOPs per second measured on its stage, or null before its first completed unit. */
  flopsPerSecond: number | null;
}

export interface Move {
  id: string;
  from: number;
  to: number;
}

function capacities(peers: readonly PlacedPeer[]): Map<string, number> {
  const measured = peers.map((p) => p.flopsPerSecond).filter((f): f is number => f !== null && f > 0);
  // An unmeasured peer counts as an average one (or 1 FLOP/s when nobody is measured: only ratios matter).
  const fallback = measured.length > 0 ? measured.reduce((a, b) => a + b, 0) / measured.length : 1;
  return new Map(
    peers.map((p) => [p.id, p.flopsPerSecond && p.flopsPerSecond > 0 ? p.flopsPerSecond : fallback]),
  );
}

/** Micro-batches per second of each stage; `stageFlops` is one micro-batch's forward+backward on it. */
export function stageRates(peers: readonly PlacedPeer[], stageFlops: readonly number[]): number[] {
  const cap = capacities(peers);
  const rates = stageFlops.map(() => 0);
  for (const p of peers) rates[p.stage]! += cap.get(p.id)! / stageFlops[p.stage]!;
  return rates;
}

/**
 * The stage a joining node serves best: one with fewer than `minReplicas` replicas first (the fewest, then
 * the lowest index), else the one whose rate is lowest (ties to the lower index). Verification needs two replicas a stage: by
 * rate alone a fast node (a liar that skips the model is fast) would be left alone on its stage, unchecked.
 */
export function stageForJoiner(
  peers: readonly PlacedPeer[],
  stageFlops: readonly number[],
  minReplicas = 1,
): number {
  const counts = stageFlops.map((_, s) => peers.filter((p) => p.stage === s).length);
  const fewest = Math.min(...counts);
  if (fewest < minReplicas) return counts.indexOf(fewest);
  const rates = stageRates(peers, stageFlops);
  return rates.indexOf(Math.min(...rates));
}

/** The single move that raises the bottleneck most, if it raises it by more than `margin` (x); else null. */
export function rebalanceMove(
  peers: readonly PlacedPeer[],
  stageFlops: readonly number[],
  margin = 1.5,
  /** No move leaves a stage with fewer replicas than this (or than one). */
  minReplicas = 1,
): Move | null {
  const cap = capacities(peers);
  const counts = stageFlops.map((_, s) => peers.filter((p) => p.stage === s).length);
  const before = Math.min(...stageRates(peers, stageFlops));
  // Guesses are not worth a stage rebuild: only an empty stage moves anyone before everyone is measured.
  if (before > 0 && peers.some((p) => p.flopsPerSecond === null)) return null;
  let best: Move | null = null;
  let bestAfter = before;
  const ordered = [...peers].sort((a, b) => cap.get(a.id)! - cap.get(b.id)! || (a.id < b.id ? -1 : 1));
  for (const p of ordered) {
    if (counts[p.stage]! <= Math.max(1, minReplicas)) continue;
    for (let to = 0; to < stageFlops.length; to++) {
      if (to === p.stage) continue;
      const moved = peers.map((q) =>
        q.id === p.id ? { ...q, stage: to, flopsPerSecond: cap.get(q.id)! } : q,
      );
      const after = Math.min(...stageRates(moved, stageFlops));
      if (after > bestAfter) {
        best = { id: p.id, from: p.stage, to };
        bestAfter = after;
      }
    }
  }
  if (!best) return null;
  return before === 0 || bestAfter > before * margin ? best : null;
}
