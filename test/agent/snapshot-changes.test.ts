import { describe, expect, it } from 'vitest';
import {
  applySnapshotChanges,
  snapshotChanges,
  SnapshotReceiver,
  SnapshotSender,
} from '../../shared/dashboard/snapshot-changes.js';
import { sampleSnapshot } from '../e2e/renderer-fixtures/snapshot.js';

const base = sampleSnapshot();
const later = (change: Partial<typeof base>) => ({ ...base, at: '2026-11-25T15:30:01.000Z', ...change });

describe('snapshot changes', () => {
  it('are nothing when only the time moved', () => {
    expect(snapshotChanges(base, later({}))).toBeNull();
  });

  it('carry only the fields that changed and rebuild the same snapshot', () => {
    const next = later({
      state: 'paused',
      reason: 'Paused by you',
      telemetry: { ...base.telemetry, gpuTempC: 60 },
    });
    const changes = snapshotChanges(base, next)!;
    expect(Object.keys(changes.fields).sort()).toEqual(['at', 'reason', 'state', 'telemetry']);
    expect(changes.lossTail).toBeUndefined();
    expect(applySnapshotChanges(base, changes)).toEqual(next);
  });

  it('send new loss points, a validation loss attached to a recent step, a trimmed front, and a reset', () => {
    const grown = later({ loss: [...base.loss, { step: 420, loss: 1.4 }] });
    expect(snapshotChanges(base, grown)).toMatchObject({ lossTail: [{ step: 420, loss: 1.4 }] });
    const validated = later({ loss: [...base.loss.slice(0, -1), { ...base.loss.at(-1)!, validation: 1.7 }] });
    const attached = snapshotChanges(base, validated)!;
    expect(attached.lossTail).toEqual([{ ...base.loss.at(-1)!, validation: 1.7 }]);
    expect(applySnapshotChanges(base, attached)).toEqual(validated);
    const trimmed = later({ loss: [...base.loss.slice(5), { step: 420, loss: 1.4 }] });
    expect(applySnapshotChanges(base, snapshotChanges(base, trimmed)!)).toEqual(trimmed);
    const reset = later({ loss: [] });
    expect(applySnapshotChanges(base, snapshotChanges(base, reset)!)).toEqual(reset);
  });
});

describe('snapshot streams', () => {
  it('send the whole snapshot first, then changes, nothing when only the time moved, and start over on restart', () => {
    const sender = new SnapshotSender();
    const receiver = new SnapshotReceiver();
    expect(receiver.receive({ type: 'changes', fields: { state: 'paused' } })).toBeNull();
    // The agent grows its loss array in place; the sender must compare against a copy of what it sent.
    const live = { ...base, loss: [...base.loss] };
    const first = sender.message(live)!;
    expect(first).toEqual({ type: 'snapshot', snapshot: base });
    expect(receiver.receive(structuredClone(first))).toEqual(base);
    expect(sender.message({ ...live, at: later({}).at })).toBeNull();
    live.loss.push({ step: 430, loss: 1.5 });
    const changes = sender.message({ ...live, at: later({}).at })!;
    expect(changes).toMatchObject({ type: 'changes', lossTail: [{ step: 430, loss: 1.5 }] });
    expect(receiver.receive(structuredClone(changes))).toEqual({ ...live, at: later({}).at });
    sender.restart();
    expect(sender.message(live)).toEqual({ type: 'snapshot', snapshot: live });
  });
});
