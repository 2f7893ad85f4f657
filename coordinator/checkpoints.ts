import { createHash } from 'node:crypto';
import { mkdirSync, openSync, fsyncSync, closeSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { safetensorsToStageState, stageStateToSafetensors } from '../gpu/checkpoint/stage-checkpoint.js';
import { stageParamCount } from '../gpu/model/params.js';
import type { RunShape } from './run-config.js';
import { flatten, unflatten, type FlatState } from '../gpu/model/flat-state.js';
import { stateProblem } from './value-checks.js';

/** A checkpoint that fails its check is never loaded: the weights it would give a joiner are unknown. */
export class CheckpointRejected extends Error {}

const HASHES = 'sha256.json';

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function writeDurably(file: string, bytes: Uint8Array | string): void {
  writeFileSync(`${file}.tmp`, bytes);
  const fd = openSync(`${file}.tmp`, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(`${file}.tmp`, file);
}

/** Directory of the checkpoint taken after `step` global steps. */
export function checkpointDir(root: string, step: number): string {
  return join(root, `step-${String(step).padStart(8, '0')}`);
}

function stageFile(dir: string, stage: number): string {
  return join(dir, `stage-${stage}.safetensors`);
}

/**
 * Writes one safetensors file per stage, each fsynced and renamed into place, then their sha256 hashes,
 * before the index names the checkpoint. States with non-finite or absurd numbers are refused unwritten.
 */
export function saveCheckpoint(
  root: string,
  step: number,
  run: RunShape,
  runId: string,
  states: FlatState[],
): string {
  states.forEach((flat, stage) => {
    const problem = stateProblem(flat);
    if (problem)
      throw new CheckpointRejected(`stage ${stage + 1}'s state ${problem.replace(/^sent /, 'holds ')}`);
  });
  const dir = checkpointDir(root, step);
  mkdirSync(dir, { recursive: true });
  const hashes: Record<string, string> = {};
  states.forEach((flat, stage) => {
    const range = run.ranges[stage]!;
    const bytes = stageStateToSafetensors(unflatten(run.model, range, flat), {
      config: run.model,
      range,
      extra: { runId, globalStep: String(step) },
    });
    const file = stageFile(dir, stage);
    writeDurably(file, bytes);
    hashes[`stage-${stage}.safetensors`] = sha256(bytes);
  });
  writeDurably(join(dir, HASHES), `${JSON.stringify(hashes, null, 2)}\n`);
  return dir;
}

/** Loads a checkpoint only when every file matches the hash written with it and every value is sane. */
export function loadCheckpoint(dir: string, run: RunShape): FlatState[] {
  let hashes: Record<string, unknown>;
  try {
    hashes = JSON.parse(readFileSync(join(dir, HASHES), 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new CheckpointRejected(`checkpoint ${dir} has no readable hash list: ${(err as Error).message}`);
  }
  return run.ranges.map((range, stage) => {
    const bytes = readFileSync(stageFile(dir, stage));
    if (hashes[`stage-${stage}.safetensors`] !== sha256(bytes))
      throw new CheckpointRejected(
        `checkpoint ${dir}: stage ${stage + 1}'s file does not match the hash recorded when it was written`,
      );
    const { state } = safetensorsToStageState(bytes, { config: run.model, range });
    const flat = flatten(state, stageParamCount(run.model, range));
    const problem = stateProblem(flat);
    if (problem)
      throw new CheckpointRejected(
        `checkpoint ${dir}: stage ${stage + 1} ${problem.replace(/^sent /, 'holds ')}`,
      );
    return flat;
  });
}
