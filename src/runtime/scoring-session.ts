// Scoring sessions (proxy mode's shadow scorer): the sequence lives in the worker's batch like a
// generation, its cache grows with each extend, and each step teacher-forces one token, so
// concurrent sessions and generations share steps. A token costs one step, not a rescore.

import type { NeuronIntervention, ScoringSession, TokenRecord } from './types.ts';
import type { OnnxEngine } from './engine.ts';
import { InvalidInputError } from '../errors.ts';
import { RepeatTracker } from '../monitor/repeat.ts';
import { IvTracker } from './seq-stream.ts';

export async function openScoringSession(
host: OnnxEngine,
promptIds: number[],
opts: { interventions?: () => NeuronIntervention[] },
): Promise<ScoringSession> {
  host.checkIds(promptIds);
  const iv = new IvTracker(opts.interventions, host.spec.dMlp);
  const { seqId, stream } = host.openStream(iv);
  try {
    await host.worker.start({
      seqId,
      mode: 'score',
      prompt: promptIds,
      temperature: 0,
      topK: 0,
      topP: 1,
      seed: 0,
      topLogprobs: 0,
      maxTokens: 0,
      eos: [],
      credit: 0,
      iv: iv.poll()!,
    });
  } catch (e) {
    host.closeStream(seqId);
    throw e;
  }
  let length = promptIds.length;
  const decoder = host.tokenizer.createStreamDecoder(promptIds);
  const repeat = new RepeatTracker();
  for (const id of promptIds) repeat.push(id);
  let closed = false;
  let completion = 0;
  // Extends run one after another: each reads its own tokens' results off the stream.
  let chain: Promise<unknown> = Promise.resolve();
  const extend = async (tokenIds: number[]): Promise<TokenRecord[]> => {
    if (closed) throw new Error('scoring session is closed');
    if (tokenIds.length === 0) return [];
    host.checkIds(tokenIds);
    if (length + tokenIds.length > host.spec.maxPositions) {
      throw new InvalidInputError(
        `the sequence (${length + tokenIds.length} tokens) exceeds this model's context of ${host.spec.maxPositions}`,
        'prompt',
      );
    }
    length += tokenIds.length;
    const upd = iv.poll();
    if (upd) host.worker.control({ type: 'iv', seqId, iv: upd });
    host.worker.control({ type: 'feed', seqId, tokens: tokenIds });
    const out: TokenRecord[] = [];
    for (const tokenId of tokenIds) {
      const r = (await stream.next())!;
      // The record of a token carries the distribution that predicted it; repeat is the
      // suffix match ending at the token itself (as in generate).
      out.push({
        source: 'shadow',
        index: completion++,
        tokenId,
        text: decoder.push(tokenId),
        ...host.stepSignals(r, iv.idsFor(r.ivVersion)),
        repeat: repeat.push(tokenId),
      });
    }
    return out;
  };
  return {
    extend: (tokenIds) => {
      const next = chain.then(() => extend(tokenIds));
      chain = next.catch(() => undefined);
      return next;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      host.closeStream(seqId);
    },
  };
}
