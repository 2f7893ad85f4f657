import type { AgentSnapshot } from './contract.js';

type LossPoint = AgentSnapshot['loss'][number];

/**
 * What changed between two snapshots, for the dashboard's WebSocket: the full snapshot goes out once, then
 * only the top-level fields that changed, and of the loss curve only its new or changed newest points
 * (Folding@home's web control works the same way). `at` travels only with another change.
 */
export interface SnapshotChanges {
  fields: Partial<Omit<AgentSnapshot, 'loss'>>;
  /** The newest loss points from the first one that is new or differs; they replace that step onward. */
  lossTail?: LossPoint[];
  /** How many loss points the agent keeps; older ones drop off the front. */
  lossLength?: number;
}

function samePoint(a: LossPoint | undefined, b: LossPoint): boolean {
  return a !== undefined && a.loss === b.loss && a.validation === b.validation;
}

/** The newest points of `next` that `prev` lacks or holds differently; null when the curve is unchanged. */
function lossTail(prev: readonly LossPoint[], next: readonly LossPoint[]): LossPoint[] | null {
  const byStep = new Map(prev.map((p) => [p.step, p]));
  let from = next.length;
  while (from > 0 && !samePoint(byStep.get(next[from - 1]!.step), next[from - 1]!)) from -= 1;
  // Everything up to `from` matches: what follows is new or changed.
  return from === next.length && next.length === prev.length ? null : next.slice(from);
}

/** The changes from `prev` to `next`, or null when nothing but the time changed. */
export function snapshotChanges(prev: AgentSnapshot, next: AgentSnapshot): SnapshotChanges | null {
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(next) as (keyof AgentSnapshot)[]) {
    if (key === 'loss' || key === 'at') continue;
    if (JSON.stringify(prev[key]) !== JSON.stringify(next[key])) fields[key] = next[key];
  }
  const tail = lossTail(prev.loss, next.loss);
  if (Object.keys(fields).length === 0 && tail === null) return null;
  return {
    fields: { ...fields, at: next.at } as SnapshotChanges['fields'],
    ...(tail === null ? {} : { lossTail: tail, lossLength: next.loss.length }),
  };
}

/** `prev` with the changes applied: what the agent's own snapshot was. */
export function applySnapshotChanges(prev: AgentSnapshot, changes: SnapshotChanges): AgentSnapshot {
  let loss = prev.loss;
  if (changes.lossTail) {
    const first = changes.lossTail[0]?.step ?? Infinity;
    const merged = [...prev.loss.filter((p) => p.step < first), ...changes.lossTail];
    loss = merged.slice(Math.max(0, merged.length - (changes.lossLength ?? merged.length)));
  }
  return { ...prev, ...changes.fields, loss };
}

/** Agent -> UI: the whole snapshot once, then only what changed. */
export type SnapshotMessage =
  { type: 'snapshot'; snapshot: AgentSnapshot } | ({ type: 'changes' } & SnapshotChanges);

/**
 * The agent's end of one subscriber's stream (a dashboard WebSocket, an Electron window): the first
 * snapshot whole, then the changes since the last one sent. Both transports use this one class.
 */
export class SnapshotSender {
  private last: AgentSnapshot | null = null;

  /** What to send for `snapshot`: the whole of it first, then changes; null when only the time moved. */
  message(snapshot: AgentSnapshot): SnapshotMessage | null {
    const prev = this.last;
    const changes = prev === null ? null : snapshotChanges(prev, snapshot);
    if (prev !== null && changes === null) return null;
    // The agent's loss array grows in place: keep a copy to compare the next snapshot with.
    this.last = { ...snapshot, loss: [...snapshot.loss] };
    return changes === null ? { type: 'snapshot', snapshot } : { type: 'changes', ...changes };
  }

  /** The next message is the whole snapshot again (the subscriber asked anew, e.g. a reloaded page). */
  restart(): void {
    this.last = null;
  }
}

/** The UI's end: rebuilds each snapshot from the messages. Changes that arrive before a snapshot are dropped. */
export class SnapshotReceiver {
  latest: AgentSnapshot | null = null;

  receive(message: SnapshotMessage): AgentSnapshot | null {
    if (message.type === 'snapshot') this.latest = message.snapshot;
    else if (this.latest) this.latest = applySnapshotChanges(this.latest, message);
    else return null;
    return this.latest;
  }
}
