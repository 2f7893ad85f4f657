/** A pipeline stage as the dashboard contract describes it: 0-based index and blocks, last block inclusive. */
export interface StageBlocks {
  index: number;
  count: number;
  firstBlock: number;
  lastBlock: number;
}

/** How a person reads a stage: counted from 1, blocks too ("stage 2 of 2 (blocks 3–4)"). */
export function stageLabel(stage: StageBlocks): string {
  const blocks =
    stage.firstBlock === stage.lastBlock
      ? `block ${stage.firstBlock + 1}`
      : `blocks ${stage.firstBlock + 1}–${stage.lastBlock + 1}`;
  return `stage ${stage.index + 1} of ${stage.count} (${blocks})`;
}

/** What a run waits for, stages counted from 1: "waiting for nodes to train stages 1 and 2 of 2". */
export function waitingForStages(emptyIndices: number[], count: number): string {
  const numbers = emptyIndices.map((i) => String(i + 1));
  if (numbers.length === 1) return `waiting for a node to train stage ${numbers[0]} of ${count}`;
  const list = `${numbers.slice(0, -1).join(', ')} and ${numbers.at(-1)}`;
  return `waiting for nodes to train stages ${list} of ${count}`;
}
