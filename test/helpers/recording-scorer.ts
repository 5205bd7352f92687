// TEST DOUBLE of the engine for relay and parsing tests: the real tokenizer of a fixture (so the
// alignment is real), and scoring sessions that record the ids they are given and answer with
// placeholder records. What it stands in for, teacher-forced scoring, is tested against the real
// engine in proxy-upstream.test.ts.

import type { ScoringSession, TokenRecord } from '../../src/runtime/types.ts';
import type { ServerEngine } from '../../src/server/app.ts';
import { Tokenizer } from '../../src/model/tokenizer.ts';
import { fixture } from './shared.ts';

export interface RecordingEngine extends ServerEngine {
  /** One entry per scoring session: its prompt and every id it was extended with. */
  sessions: { prompt: number[]; ids: number[]; closed: boolean }[];
}

export function recordingEngine(name = 'gpt2-tiny-random', delayMs = 0): RecordingEngine {
  const tok = Tokenizer.load(fixture(name));
  const sessions: RecordingEngine['sessions'] = [];
  const engine = {
    modelId: `recording-${name}`,
    spec: {
      vocabSize: tok.vocabSize,
      bosTokenId: tok.bosTokenId,
      maxPositions: 1 << 30,
      nLayers: 1,
      dMlp: 4,
    },
    catalogue: { entropy: ['0.1'], frequency: ['0.2'] },
    tokenizer: tok,
    sessions,
    encode: (text: string, opts?: { addSpecialTokens?: boolean }) => tok.encode(text, opts),
    decode: (ids: number[]) => tok.decode(ids),
    async openScoring(prompt: number[]): Promise<ScoringSession> {
      const s = { prompt, ids: [] as number[], closed: false };
      sessions.push(s);
      return {
        async extend(ids: number[]): Promise<TokenRecord[]> {
          if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
          const from = s.ids.length;
          s.ids.push(...ids);
          return ids.map((tokenId, j) => ({
            source: 'shadow',
            index: from + j,
            tokenId,
            text: '',
            logprob: -1,
            entropy: 1,
            top1Prob: 0.5,
            normScale: 1,
            entropyNeurons: { '0.1': 0 },
            frequencyNeurons: { '0.2': 0 },
            repeat: 0,
            interventions: [],
          }));
        },
        async close() {
          s.closed = true;
        },
      };
    },
    generate() {
      throw new Error('not used');
    },
    score() {
      throw new Error('not used');
    },
    close: async () => undefined,
  };
  return engine as unknown as RecordingEngine;
}
