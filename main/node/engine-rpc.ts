/** Calls from the node runtime to its engine thread, and the replies. */
export type EngineMethod =
  | 'create'
  | 'forward'
  | 'backward'
  | 'forwardEncoded'
  | 'backwardEncoded'
  | 'stash'
  | 'restore'
  | 'zeroGrad'
  | 'gradSquaredNorm'
  | 'exportGrads'
  | 'importGrads'
  | 'step'
  | 'exportState'
  | 'importState'
  | 'destroy';

export interface EngineCall {
  id: number;
  method: EngineMethod;
  args: unknown;
}

export type EngineReply =
  | { id: number; ok: true; result: unknown }
  /** `name`: the error's class name (NonFiniteError tells a mixed-precision overflow from a fault). */
  | { id: number; ok: false; error: string; name?: string };

/** A line the engine thread asks the host to log (the matmul tuning it chose). */
export interface EngineLog {
  log: string;
}
