// A tokenizer worker thread: encodes prompts so that a large one (a 0.9 MB prompt takes seconds
// to tokenize) never holds the server's event loop.

import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '../../model/tokenizer.ts';
import type { TokenizeReply, TokenizeRequest, TokenizeWorkerData } from './protocol.ts';

const tokenizer = Tokenizer.load((workerData as TokenizeWorkerData).dir);

parentPort!.on('message', (req: TokenizeRequest) => {
  let reply: TokenizeReply;
  try {
    const opts = { addSpecialTokens: req.addSpecialTokens };
    const ids =
      req.kind === 'text' ? tokenizer.encode(req.text, opts) : tokenizer.encodeSegments(req.segments, opts);
    reply = { id: req.id, ids: Int32Array.from(ids) };
  } catch (e) {
    reply = { id: req.id, error: (e as Error).message };
  }
  parentPort!.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
});
