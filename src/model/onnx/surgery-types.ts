// What graph surgery finds in a decoder export (see instrument.ts), and its one error type.

import type { NormType } from '../types.ts';
import type { NodeProto, TensorProto } from './proto.ts';

/** The export does not have the structure the surgery needs; the message says what is missing. */
export class GraphSurgeryError extends Error {}

/** A matmul-like node whose second operand is a weight: MatMul, or Gemm (with transB / bias C). */
export interface MatmulSite {
  node: NodeProto;
  /** The stored weight tensor (an initializer or Constant value). */
  weight: TensorProto;
  /** True when the product uses the stored tensor transposed (Gemm transB, a Transpose node, or both cancelling). */
  weightTransposed: boolean;
  /** The product's weight as [in, out]. */
  inFeatures: number;
  outFeatures: number;
  /** Gemm's alpha (1 for MatMul). */
  alpha: number;
}

export interface FinalNorm {
  type: NormType;
  /** Epsilon read from the graph (the norm's constant or attribute), or null when none was found. */
  eps: number | null;
  /** x: the last residual stream, the norm's input. */
  input: string;
  /** The normalized hidden state fed to the unembedding. */
  output: string;
  gamma: TensorProto | null;
  beta: TensorProto | null;
  /** The tensors added together into x (the residual Add's operands, or a fused Skip*Norm's input and skip). */
  residualTerms: string[];
  /** A fused Skip*LayerNormalization that computes x itself (exposed through its 4th output). */
  fusedSkip: NodeProto | null;
}

export interface ExportAnatomy {
  logits: string;
  unembed: MatmulSite;
  /** Bias added to the logits (Gemm C or an Add after the matmul), if any. */
  unembedBias: TensorProto | null;
  /** Nodes between the unembedding's output and the logits output (bias Add, Reshape, Cast ...). */
  logitsTail: NodeProto[];
  norm: FinalNorm;
  down: MatmulSite;
  /** The last layer's neuron activations: the down projection's data input. */
  activation: string;
  dModel: number;
  dMlp: number;
  vocab: number;
}

export interface SurgeryHints {
  /** d_mlp from config.json: the down projection is the matmul with a [d_mlp, d_model] weight. */
  dMlp: number;
}
