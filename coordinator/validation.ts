import type { MicroBatchShape } from '../gpu/model/config.js';
import { Corpus, type MicroBatch } from './data.js';

export interface ValidationSettings {
  /** Evaluate after every this many steps and after the last; 0 turns validation off. */
  every: number;
  /** Micro-batches in the held-out evaluation (always the same ones). */
  microBatches: number;
  /** The tail of the corpus held out of training. */
  heldOutFraction: number;
}

/**
 * The corpus cut in two: training micro-batches are drawn from the head only, validation micro-batches are
 * fixed windows of the tail, so no held-out token is ever trained on. With validation off the whole corpus
 * trains, as before.
 */
export class SplitCorpus {
  readonly train: Corpus;
  readonly heldOut: Corpus | null;

  constructor(corpus: Corpus, settings: ValidationSettings, shape: MicroBatchShape) {
    if (settings.every === 0) {
      this.train = corpus;
      this.heldOut = null;
      return;
    }
    const n = corpus.tokens.length;
    const held = Math.floor(n * settings.heldOutFraction);
    if (held < shape.seq + 1 || n - held < shape.seq + 1) {
      throw new Error(
        `a corpus of ${n} tokens cannot hold out ${settings.heldOutFraction} and still fit sequences of ${shape.seq + 1}`,
      );
    }
    this.train = new Corpus(corpus.tokens.subarray(0, n - held));
    this.heldOut = new Corpus(corpus.tokens.subarray(n - held));
  }

  /**
   * Validation micro-batch `index` of `count`: windows spread evenly over the held-out tail, the same at every
   * evaluation so that losses compare across steps.
   */
  validationBatch(index: number, count: number, shape: MicroBatchShape): MicroBatch {
    const held = this.heldOut;
    if (!held) throw new Error('validation is off for this run');
    const { batch, seq } = shape;
    const span = held.tokens.length - seq - 1;
    const windows = count * batch;
    const tokens = new Int32Array(batch * seq);
    const targets = new Int32Array(batch * seq);
    for (let b = 0; b < batch; b++) {
      const start = Math.floor(((index * batch + b) * span) / Math.max(1, windows - 1));
      const at = Math.min(start, span);
      tokens.set(held.tokens.subarray(at, at + seq), b * seq);
      targets.set(held.tokens.subarray(at + 1, at + seq + 1), b * seq);
    }
    return { tokens, targets };
  }
}

/** Whether the held-out evaluation runs after `stepsDone` steps of `totalSteps`. */
export function validationDue(settings: ValidationSettings, stepsDone: number, totalSteps: number): boolean {
  return settings.every > 0 && (stepsDone % settings.every === 0 || stepsDone === totalSteps);
}

/** Where held-out losses are kept (the coordinator's SQLite store), so that they outlive a restart. */
export interface ValidationStore {
  addValidationLoss(step: number, loss: number): void;
  /** By the number of steps trained when each was measured, in order. */
  validationLosses(): Array<{ step: number; loss: number }>;
}

/** The latest held-out loss (with the steps trained when it was measured) and the best so far. */
export interface ValidationSummary {
  step: number;
  loss: number;
  best: number;
}

/**
 * The run's held-out evaluations, read from the store every time rather than kept in memory: a restarted
 * coordinator shows the ones before the restart, and a rollback's truncation drops those it undid.
 */
export class ValidationHistory {
  /** `onLoss` gets the latest loss now (after a restart) and each new one (the metrics gauge). */
  constructor(
    private readonly store: ValidationStore,
    private readonly onLoss: (loss: number) => void = () => {},
  ) {
    const latest = this.summary();
    if (latest) onLoss(latest.loss);
  }

  record(step: number, loss: number): ValidationSummary {
    this.store.addValidationLoss(step, loss);
    this.onLoss(loss);
    return this.summary()!;
  }

  summary(): ValidationSummary | null {
    const all = this.store.validationLosses();
    const latest = all.at(-1);
    if (!latest) return null;
    return { ...latest, best: Math.min(...all.map((v) => v.loss)) };
  }

  /** Each evaluation at the index of the step it followed (the dashboard's x), as `progress` carries them. */
  points(): Array<{ step: number; loss: number }> {
    return this.store.validationLosses().map((v) => ({ step: v.step - 1, loss: v.loss }));
  }
}
