import type {
  AgentState,
  NetworkPhase,
  NetworkSnapshot,
  ReasonCode,
} from '../../shared/dashboard/contract.js';

export interface StateLine {
  state: AgentState;
  reasonCode: ReasonCode;
  /** A sentence a person can read; the dashboard, the tray and the CLI all show this one. */
  reason: string;
}

/**
 * One state for the person from three sources: the policy (may this machine work now?), the GPU worker (can
 * it?) and the network (is there work?). The policy's "no" wins, because it is the person's own rule; then a
 * broken GPU; then the network. Without a network attached (the agent alone, as in its own tests) the policy
 * speaks alone.
 */
export function combineState(
  policy: StateLine,
  network: NetworkSnapshot | null,
  gpuProblem: string | null,
): StateLine {
  if (network?.phase === 'not-joined') {
    return {
      state: 'paused',
      reasonCode: 'not-set-up',
      reason: 'Paused until you choose a network to join and accept',
    };
  }
  if (policy.state !== 'running') {
    // While the policy holds the node back, a coordinator it cannot reach must still be said.
    const down = network?.phase === 'disconnected' || network?.phase === 'refused';
    if (!down) return policy;
    const detail = network.detail.charAt(0).toLowerCase() + network.detail.slice(1);
    return { ...policy, reason: `${policy.reason}; ${detail}` };
  }
  if (gpuProblem !== null) return { state: 'waiting', reasonCode: 'gpu-restarting', reason: gpuProblem };
  if (network === null) return policy;
  switch (network.phase) {
    case 'connecting':
      return { state: 'waiting', reasonCode: 'connecting', reason: network.detail };
    case 'disconnected':
    case 'refused':
      return { state: 'waiting', reasonCode: 'disconnected', reason: network.detail };
    case 'waiting-for-stage':
      return { state: 'waiting', reasonCode: 'waiting-for-stage', reason: network.detail };
    case 'run-finished':
      return { state: 'waiting', reasonCode: 'run-finished', reason: network.detail };
    case 'training':
      // "Contributing at 60% (your GPU load cap)" becomes "Training stage 2 of 3 (blocks 3–4) at 60% (...)".
      return { ...policy, reason: policy.reason.replace(/^Contributing/, network.detail) };
  }
}

/** Where the node stands while no connection is open: not joined yet, or stopped on purpose. */
export function offlineNetwork(
  network: { url: string; coordinatorKey: string | null } | null,
  phase: NetworkPhase,
  detail: string,
): NetworkSnapshot {
  return {
    url: network?.url ?? null,
    coordinatorKey: network?.coordinatorKey ?? null,
    phase,
    detail,
    retryAt: null,
    tokensPerSecond: null,
  };
}
