// Turns chat messages into the prompt text the model was trained on. Instruction-tuned models ship
// a Jinja chat template in tokenizer_config.json (rendered here with @huggingface/jinja, with the
// same variables transformers passes). Base models have none; they get PLAIN_CHAT_TEMPLATE:
//
//     System: <content>
//     User: <content>
//     Assistant: <content>
//     Assistant:
//
// (one line per message, then "Assistant:" to prompt the reply). Tokenizer-config templates write
// their own BOS token, so their text is encoded without special tokens; the plain one is encoded
// with them, exactly like a completion prompt.

import { randomBytes } from 'node:crypto';
import { Template } from '@huggingface/jinja';
import type { PromptSegment } from '../model/tokenizer.ts';
import { ApiError } from './errors.ts';

export const PLAIN_CHAT_TEMPLATE =
  '{% for message in messages %}{{ message.role | capitalize }}: {{ message.content }}\n{% endfor %}' +
  '{% if add_generation_prompt %}Assistant:{% endif %}';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
  name?: string;
}

/** What the tokenizer folder says about chat formatting (tokenizer_config.json). */
export interface ChatTemplateSource {
  /** The Jinja template; null or absent for base models. */
  chatTemplate?: string | null;
  /** The special tokens' text, for templates that write them (`{{ bos_token }}`). */
  bosToken?: string | null;
  eosToken?: string | null;
}

export interface RenderedChat {
  prompt: string;
  /**
   * The prompt as template markup and message contents (`plain`): only the markup may produce
   * special tokens, so a message that spells "</s><s>" cannot end the turn or start a new one.
   */
  segments: PromptSegment[];
  /** Whether the tokenizer should add its special tokens (BOS) when encoding `prompt`. */
  addSpecialTokens: boolean;
}

export class ChatFormatter {
  private readonly template: Template;
  private readonly fromTokenizer: boolean;

  /** Parses the template once; a template that does not parse is a broken model folder. */
  constructor(private readonly source: ChatTemplateSource = {}) {
    const own = source.chatTemplate ?? null;
    this.fromTokenizer = own !== null;
    try {
      this.template = new Template(own ?? PLAIN_CHAT_TEMPLATE);
    } catch (e) {
      throw new Error(`the tokenizer's chat_template does not parse: ${(e as Error).message}`);
    }
  }

  render(messages: ChatMessage[]): RenderedChat {
    // Rendered with a placeholder for each content (a random nonce: no message can forge one),
    // so the markup and the contents can be told apart in the result.
    const nonce = randomBytes(8).toString('hex');
    const marker = (i: number) => `\uE000${nonce}:${i}\uE001`;
    const markup = this.renderRaw(messages.map((m, i) => ({ ...m, content: marker(i) })));
    const segments = splitAtMarkers(markup, nonce, messages);
    if (segments)
      return {
        prompt: segments.map((s) => s.text).join(''),
        segments,
        addSpecialTokens: !this.fromTokenizer,
      };
    // A template that transforms contents (trims, upper-cases, repeats them): fall back to the
    // text as rendered, every occurrence of a content counting as plain text.
    const prompt = this.renderRaw(messages);
    return { prompt, segments: markOccurrences(prompt, messages), addSpecialTokens: !this.fromTokenizer };
  }

  private renderRaw(messages: ChatMessage[]): string {
    let prompt: string;
    try {
      prompt = this.template.render({
        messages,
        add_generation_prompt: true,
        bos_token: this.source.bosToken ?? '',
        eos_token: this.source.eosToken ?? '',
      });
    } catch (e) {
      // Templates reject conversations they cannot format (raise_exception("roles must
      // alternate ...")): that is the caller's input, so a 400 with the template's words.
      throw new ApiError(
        'invalid_value',
        `The chat template rejected the messages: ${(e as Error).message}`,
        'messages',
      );
    }
    return prompt;
  }
}

/** Splits a placeholder rendering into markup and contents; null unless each appears once. */
function splitAtMarkers(markup: string, nonce: string, messages: ChatMessage[]): PromptSegment[] | null {
  const pattern = new RegExp(`\uE000${nonce}:(\\d+)\uE001`, 'g');
  const segments: PromptSegment[] = [];
  const seen = new Set<number>();
  let last = 0;
  for (const m of markup.matchAll(pattern)) {
    const i = Number(m[1]);
    if (seen.has(i) || i >= messages.length) return null;
    seen.add(i);
    segments.push({ text: markup.slice(last, m.index), plain: false });
    segments.push({ text: messages[i]!.content, plain: true });
    last = m.index + m[0].length;
  }
  segments.push({ text: markup.slice(last), plain: false });
  return seen.size === messages.length ? segments : null;
}

/** Marks every occurrence of a message's content in the rendered prompt as plain text. */
function markOccurrences(prompt: string, messages: ChatMessage[]): PromptSegment[] {
  const plain = new Uint8Array(prompt.length);
  for (const { content } of messages) {
    if (content.length === 0) continue;
    for (let at = prompt.indexOf(content); at >= 0; at = prompt.indexOf(content, at + content.length))
      plain.fill(1, at, at + content.length);
  }
  const segments: PromptSegment[] = [];
  for (let i = 0; i < prompt.length;) {
    let j = i;
    while (j < prompt.length && plain[j] === plain[i]) j++;
    segments.push({ text: prompt.slice(i, j), plain: plain[i] === 1 });
    i = j;
  }
  return segments;
}
