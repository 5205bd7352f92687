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

import { Template } from '@huggingface/jinja';
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
    return { prompt, addSpecialTokens: !this.fromTokenizer };
  }
}
