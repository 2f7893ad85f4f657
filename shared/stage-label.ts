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
