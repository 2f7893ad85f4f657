import { Uniforms, computePipeline, declare, first, flatMain, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;

const forwardShader = `${declare(['out', 'tokens: i32', 'wte', 'wpe'], ['BT', 'T', 'C'])}
${flatMain(WG)}
  if (i >= p.BT * p.C) { return; }
  let bt = i / p.C;
  let c = i % p.C;
  out[i] = wte[u32(tokens[bt]) * p.C + c] + wpe[(bt % p.T) * p.C + c];
}`;

// One thread owns a column of wte and walks the positions in order: tokens repeat, so this is the
// race-free, fixed-order way to scatter-add.
const wteBackwardShader = `${declare(['dwte', 'tokens: i32', 'dout'], ['BT', 'C'])}
${flatMain(WG)}
  if (i >= p.C) { return; }
  for (var bt = 0u; bt < p.BT; bt++) {
    let row = u32(tokens[bt]) * p.C;
    dwte[row + i] += dout[bt * p.C + i];
  }
}`;

const wpeBackwardShader = `${declare(['dwpe', 'dout'], ['B', 'T', 'C'])}
${flatMain(WG)}
  if (i >= p.T * p.C) { return; }
  var acc = dwpe[i];
  for (var b = 0u; b < p.B; b++) { acc += dout[b * p.T * p.C + i]; }
  dwpe[i] = acc;
}`;

export interface EncoderDims {
  B: number;
  T: number;
  C: number;
  vocab: number;
}

/** Token + position embedding, forward and backward (backward accumulates). Token ids must be < vocab. */
export class Encoder {
  private readonly fwd: GPUComputePipeline;
  private readonly bwdWte: GPUComputePipeline;
  private readonly bwdWpe: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.fwd = computePipeline(device, 'encoder.forward', forwardShader);
    this.bwdWte = computePipeline(device, 'encoder.backward.wte', wteBackwardShader);
    this.bwdWpe = computePipeline(device, 'encoder.backward.wpe', wpeBackwardShader);
  }

  /** out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] */
  forward(a: {
    out: TensorRef;
    tokens: TensorRef;
    wte: TensorRef;
    wpe: TensorRef;
    dims: EncoderDims;
  }): EncodedOp {
    const { B, T, C, vocab } = a.dims;
    const label = 'encoder.forward';
    return launch(
      this.device,
      this.fwd,
      label,
      [
        first(a.out, B * T * C, label),
        first(a.tokens, B * T, label),
        first(a.wte, vocab * C, label),
        first(a.wpe, T * C, label),
      ],
      new Uniforms()
        .u32(B * T)
        .u32(T)
        .u32(C),
      grid(B * T * C, WG),
    );
  }

  /** dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:] */
  backward(a: {
    dwte: TensorRef;
    dwpe: TensorRef;
    dout: TensorRef;
    tokens: TensorRef;
    dims: EncoderDims;
  }): EncodedOp {
    const { B, T, C, vocab } = a.dims;
    const label = 'encoder.backward';
    const dout = first(a.dout, B * T * C, label);
    const wte = launch(
      this.device,
      this.bwdWte,
      `${label}.wte`,
      [first(a.dwte, vocab * C, label), first(a.tokens, B * T, label), dout],
      new Uniforms().u32(B * T).u32(C),
      grid(C, WG),
    );
    const wpe = launch(
      this.device,
      this.bwdWpe,
      `${label}.wpe`,
      [first(a.dwpe, T * C, label), dout],
      new Uniforms().u32(B).u32(T).u32(C),
      grid(T * C, WG),
    );
    return sequence(label, [wte, wpe]);
  }
}
