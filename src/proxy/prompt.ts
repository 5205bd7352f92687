// The prompt the upstream saw, as local token ids: chat messages rendered through the local chat
// template exactly as serve mode renders them (src/server/chat-template.ts, with the same special-
// token rule: a tokenizer template writes its own BOS, the plain one is encoded with special
// tokens), a completions prompt encoded as serve mode encodes it. A request the local side cannot
// render (tool messages, images, several prompts) is relayed and left unscored: the proxy never
// refuses what the upstream would accept.

import type { ChatFormatter, ChatMessage, ChatRole } from '../server/chat-template.ts';
import type { ServerEngine } from '../server/app.ts';

const ROLES: Record<string, ChatRole> = {
  system: 'system',
  developer: 'system',
  user: 'user',
  assistant: 'assistant',
};

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function message(m: unknown): ChatMessage | null {
  if (!isObj(m) || typeof m.role !== 'string') return null;
  const role = ROLES[m.role];
  if (!role) return null;
  let content: string;
  if (typeof m.content === 'string') content = m.content;
  else if (m.content === null || m.content === undefined) content = '';
  else if (
    Array.isArray(m.content) &&
    m.content.every((p) => isObj(p) && p.type === 'text' && typeof p.text === 'string')
  )
    content = m.content.map((p) => (p as Obj).text as string).join('');
  else return null;
  return { role, content, ...(typeof m.name === 'string' ? { name: m.name } : {}) };
}

export type PromptResult = { ids: number[] } | { unscored: string };

export function chatPrompt(body: Obj, engine: ServerEngine, chat: ChatFormatter): PromptResult {
  if (!Array.isArray(body.messages)) return { unscored: 'no messages' };
  const messages = body.messages.map(message);
  if (messages.some((m) => m === null)) return { unscored: 'a message the local template cannot render' };
  try {
    const rendered = chat.render(messages as ChatMessage[]);
    const ids = engine.encode(rendered.prompt, { addSpecialTokens: rendered.addSpecialTokens });
    return ids.length > 0 ? { ids } : { unscored: 'empty prompt' };
  } catch (e) {
    return { unscored: `the local chat template rejected the messages: ${(e as Error).message}` };
  }
}

export function completionPrompt(body: Obj, engine: ServerEngine): PromptResult {
  let p = body.prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  let ids: number[];
  if (typeof p === 'string') ids = engine.encode(p);
  else if (Array.isArray(p) && p.every((x) => Number.isInteger(x) && x >= 0 && x < engine.spec.vocabSize))
    ids = p as number[];
  else return { unscored: 'a prompt that is not one string or one list of local token ids' };
  if (ids.length === 0) {
    // As serve mode: an empty prompt is the start of a document.
    const bos = engine.spec.bosTokenId;
    return bos === null ? { unscored: 'empty prompt' } : { ids: [bos] };
  }
  return { ids };
}
