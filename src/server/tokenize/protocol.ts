// Messages between the server and its tokenizer worker threads.

import type { PromptSegment } from '../../model/tokenizer.ts';

export interface TokenizeWorkerData {
  /** The model folder the worker loads its own Tokenizer from. */
  dir: string;
}

export type TokenizeRequest =
  | { id: number; kind: 'text'; text: string; addSpecialTokens: boolean }
  | { id: number; kind: 'segments'; segments: PromptSegment[]; addSpecialTokens: boolean };

export type TokenizeReply = { id: number; ids: Int32Array } | { id: number; error: string };
