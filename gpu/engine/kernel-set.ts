import { AdamW } from '../kernels/adamw.js';
import { Attention } from '../kernels/attention.js';
import { CrossEntropy } from '../kernels/crossentropy.js';
import { Elementwise } from '../kernels/elementwise.js';
import { Encoder } from '../kernels/encoder.js';
import { LayerNorm } from '../kernels/layernorm.js';
import { Matmul } from '../kernels/matmul.js';
import { Reduce } from '../kernels/reduce.js';

/** Every kernel's compiled pipelines on one device; shared by the stages on that device. */
export class KernelSet {
  readonly encoder: Encoder;
  readonly layernorm: LayerNorm;
  readonly matmul: Matmul;
  readonly attention: Attention;
  readonly elementwise: Elementwise;
  readonly crossentropy: CrossEntropy;
  readonly reduce: Reduce;

  constructor(readonly device: GPUDevice) {
    this.encoder = new Encoder(device);
    this.layernorm = new LayerNorm(device);
    this.matmul = new Matmul(device);
    this.attention = new Attention(device);
    this.elementwise = new Elementwise(device);
    this.crossentropy = new CrossEntropy(device);
    this.reduce = new Reduce(device);
  }

  /** AdamW keeps its per-step settings in a uniform, so each stage gets its own instance. */
  adamw(): AdamW {
    return new AdamW(this.device);
  }
}
