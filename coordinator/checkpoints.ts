import { mkdirSync, openSync, fsyncSync, closeSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { safetensorsToStageState, stageStateToSafetensors } from '../gpu/checkpoint/stage-checkpoint.js';
import { stageParamCount } from '../gpu/model/params.js';
import type { RunShape } from './run-config.js';
import { flatten, unflatten, type FlatState } from '../gpu/model/flat-state.js';

/** Directory of the checkpoint taken after `step` global steps. */
export function checkpointDir(root: string, step: number): string {
  return join(root, `step-${String(step).padStart(8, '0')}`);
}

function stageFile(dir: string, stage: number): string {
  return join(dir, `stage-${stage}.safetensors`);
}

/** Writes one safetensors file per stage, each fsynced and renamed into place, before the index names it. */
export function saveCheckpoint(
  root: string,
  step: number,
  run: RunShape,
  runId: string,
  states: FlatState[],
): string {
  const dir = checkpointDir(root, step);
  mkdirSync(dir, { recursive: true });
  states.forEach((flat, stage) => {
    const range = run.ranges[stage]!;
    const bytes = stageStateToSafetensors(unflatten(run.model, range, flat), {
      config: run.model,
      range,
      extra: { runId, globalStep: String(step) },
    });
    const file = stageFile(dir, stage);
    writeFileSync(`${file}.tmp`, bytes);
    const fd = openSync(`${file}.tmp`, 'r');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(`${file}.tmp`, file);
  });
  return dir;
}

export function loadCheckpoint(dir: string, run: RunShape): FlatState[] {
  return run.ranges.map((range, stage) => {
    const { state } = safetensorsToStageState(readFileSync(stageFile(dir, stage)), {
      config: run.model,
      range,
    });
    return flatten(state, stageParamCount(run.model, range));
  });
}
