import { parentPort, workerData } from 'node:worker_threads';
import { isEncodingStage, type EncodingStage } from '../../gpu/codec/device-boundary.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import type { EngineKind } from '../../shared/protocol/messages.js';
import { openEngine, type StageEngine, type StageSpec } from './stage-factory.js';
import type { EngineCall, EngineLog, EngineReply } from './engine-rpc.js';

/**
 * The engine's thread: owns one StageTrainer (on dawn.node or the CPU) and runs calls strictly in arrival
 * order, so the host may fire zeroGrad() without waiting. Replies are copied, not transferred: results may
 * be views of buffers the stage keeps for its backward pass.
 */
const { engine: engineKind, tuningCachePath } = workerData as {
  engine: EngineKind;
  tuningCachePath?: string;
};
const log = (line: string): void => parentPort!.postMessage({ log: line } satisfies EngineLog);
let engine: StageEngine | null = null;
let stage: StageTrainer | null = null;
let queue: Promise<void> = Promise.resolve();

function need(): StageTrainer {
  if (!stage) throw new Error('no stage is loaded');
  return stage;
}

function needEncoding(): EncodingStage {
  const s = need();
  if (!isEncodingStage(s)) throw new Error('this stage does not encode its own boundary');
  return s;
}

async function handle(call: EngineCall): Promise<unknown> {
  switch (call.method) {
    case 'create':
      stage?.destroy();
      stage = null;
      engine ??= await openEngine(engineKind, { tuningCachePath, log });
      stage = await engine.create(call.args as StageSpec);
      return {
        paramCount: need().paramCount,
        stashCapacity: need().stash ? (need().stashCapacity ?? 1) : 1,
        boundaryCodec: isEncodingStage(stage) ? stage.boundaryCodec : undefined,
      };
    case 'forward': {
      const [input, targets] = call.args as Parameters<StageTrainer['forward']>;
      return need().forward(input, targets);
    }
    case 'backward': {
      const [gradOut, lossScale] = call.args as Parameters<StageTrainer['backward']>;
      return need().backward(gradOut, lossScale);
    }
    case 'forwardEncoded': {
      const [input, targets] = call.args as Parameters<EncodingStage['forwardEncoded']>;
      return needEncoding().forwardEncoded(input, targets);
    }
    case 'backwardEncoded': {
      const [gradOut, lossScale] = call.args as Parameters<EncodingStage['backwardEncoded']>;
      return needEncoding().backwardEncoded(gradOut, lossScale);
    }
    case 'stash':
      return need().stash!(call.args as number);
    case 'restore':
      return need().restore!(call.args as number);
    case 'zeroGrad':
      return need().zeroGrad();
    case 'gradSquaredNorm':
      return need().gradSquaredNorm();
    case 'exportGrads':
      return need().exportGrads();
    case 'importGrads':
      return need().importGrads(call.args as Float32Array);
    case 'step': {
      const [settings, clipScale] = call.args as Parameters<StageTrainer['step']>;
      return need().step(settings, clipScale);
    }
    case 'exportState':
      return need().exportState();
    case 'importState':
      return need().importState(call.args as Parameters<StageTrainer['importState']>[0]);
    case 'destroy':
      stage?.destroy();
      stage = null;
      engine?.close();
      engine = null;
      return undefined;
  }
}

parentPort!.on('message', (call: EngineCall) => {
  queue = queue.then(async () => {
    let reply: EngineReply;
    try {
      const result = await handle(call);
      reply = { id: call.id, ok: true, result };
    } catch (err) {
      reply = { id: call.id, ok: false, error: (err as Error).message, name: (err as Error).name };
    }
    parentPort!.postMessage(reply);
  });
});
