import { describe, expect, it } from 'vitest';
import type { NetworkSnapshot } from '../../shared/dashboard/contract.js';
import { combineState, type StateLine } from '../../main/agent/combined-state.js';

const running: StateLine = {
  state: 'running',
  reasonCode: 'running',
  reason: 'Contributing at 60% (your GPU load cap)',
};
const userPaused: StateLine = { state: 'paused', reasonCode: 'user-paused', reason: 'Paused by you' };
const network = (phase: NetworkSnapshot['phase'], detail: string): NetworkSnapshot => ({
  url: 'ws://127.0.0.1:9',
  coordinatorKey: null,
  phase,
  detail,
  retryAt: null,
  tokensPerSecond: null,
});

describe('one combined state', () => {
  it("lets the person's own rule win, then the GPU, then the network", () => {
    const down = network('disconnected', 'Disconnected from 127.0.0.1:9 (1006); retrying in 4 s');
    expect(combineState(userPaused, down, 'The GPU worker stopped')).toEqual({
      ...userPaused,
      reason: 'Paused by you; disconnected from 127.0.0.1:9 (1006); retrying in 4 s',
    });
    expect(combineState(running, down, 'The GPU worker stopped (x); restarting it in 2 s')).toEqual({
      state: 'waiting',
      reasonCode: 'gpu-restarting',
      reason: 'The GPU worker stopped (x); restarting it in 2 s',
    });
    expect(combineState(running, down, null)).toEqual({
      state: 'waiting',
      reasonCode: 'disconnected',
      reason: down.detail,
    });
  });

  it('still says a coordinator cannot be reached while the policy holds the node back', () => {
    const waiting: StateLine = { state: 'waiting', reasonCode: 'not-idle', reason: 'Waiting for idle' };
    const down = network('disconnected', 'Cannot reach the coordinator at ws://127.0.0.1:9 (ECONNREFUSED)');
    expect(combineState(waiting, down, null)).toEqual({
      ...waiting,
      reason: 'Waiting for idle; cannot reach the coordinator at ws://127.0.0.1:9 (ECONNREFUSED)',
    });
  });

  it('is paused until a network is accepted, whatever the policy says', () => {
    expect(combineState(running, network('not-joined', ''), null)).toMatchObject({
      state: 'paused',
      reasonCode: 'not-set-up',
    });
  });

  it('names the stage while training and says why it waits otherwise', () => {
    expect(combineState(running, network('training', 'Training stage 2 of 3 (blocks 3–4)'), null)).toEqual({
      state: 'running',
      reasonCode: 'running',
      reason: 'Training stage 2 of 3 (blocks 3–4) at 60% (your GPU load cap)',
    });
    expect(
      combineState(running, network('run-finished', 'The run finished: all 20 steps done'), null),
    ).toMatchObject({
      state: 'waiting',
      reasonCode: 'run-finished',
    });
    expect(
      combineState(running, network('waiting-for-stage', 'Connected; waiting for a stage'), null),
    ).toMatchObject({
      state: 'waiting',
      reasonCode: 'waiting-for-stage',
    });
    expect(combineState(running, network('connecting', 'Connecting to 127.0.0.1:9…'), null)).toMatchObject({
      state: 'waiting',
      reasonCode: 'connecting',
    });
    expect(combineState(running, null, null)).toEqual(running);
  });
});
