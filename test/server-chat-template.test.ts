// Chat formatting: the documented plain template for base models, a tokenizer_config template
// (rendered with its special tokens, encoded without adding them again), and template errors.
import { describe, expect, it } from 'vitest';
import { ChatFormatter } from '../src/server/chat-template.ts';
import { ApiError } from '../src/server/errors.ts';
import { FakeEngine } from './helpers/fake-engine.ts';
import { startServer } from './helpers/server.ts';

// A ChatML template of the kind instruction-tuned models ship, with a role check.
const CHATML =
  "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}" +
  '<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

describe('ChatFormatter', () => {
  it('formats base-model chats with the plain template, one line per message', () => {
    const r = new ChatFormatter({ chatTemplate: null }).render([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' },
      { role: 'user', content: 'More' },
    ]);
    expect(r.prompt).toBe('System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: More\nAssistant:');
    expect(r.addSpecialTokens).toBe(true);
  });

  it("renders the tokenizer's template with its BOS text and encodes without adding specials", () => {
    const r = new ChatFormatter({ chatTemplate: CHATML, bosToken: '<s>', eosToken: '</s>' }).render([
      { role: 'user', content: 'Hi' },
    ]);
    expect(r.prompt).toBe('<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    expect(r.addSpecialTokens).toBe(false);
  });

  it('a template that rejects the messages is a 400 naming messages', () => {
    const f = new ChatFormatter({ chatTemplate: CHATML });
    let err: unknown;
    try {
      f.render([{ role: 'tool' as 'user', content: 'x' }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, code: 'invalid_value', param: 'messages' });
    expect((err as Error).message).toContain('no tools here');
  });

  it('a template that does not parse is refused up front', () => {
    expect(() => new ChatFormatter({ chatTemplate: '{% if %}' })).toThrow(/chat_template does not parse/);
  });

  it("the chat endpoint uses the tokenizer's template when there is one", async () => {
    // No fixture ships a chat template, so this one runs on the test double whatever createTestEngine returns.
    const engine = new FakeEngine({ chatTemplate: CHATML, maxPositions: 512 });
    const s = await startServer({ engine });
    try {
      const messages = [{ role: 'user' as const, content: 'the moon' }];
      const r = await s.client.chat.completions.create({ model: engine.modelId, messages, max_tokens: 1 });
      const expected = engine.encode('<bos><|im_start|>user\nthe moon<|im_end|>\n<|im_start|>assistant\n', {
        addSpecialTokens: false,
      });
      expect(r.usage!.prompt_tokens).toBe(expected.length);
      // developer is read as system.
      const dev = await s.client.chat.completions.create({
        model: engine.modelId,
        messages: [{ role: 'developer', content: 'x' }, ...messages],
        max_tokens: 1,
      });
      const withSystem = engine.encode(
        '<bos><|im_start|>system\nx<|im_end|>\n<|im_start|>user\nthe moon<|im_end|>\n<|im_start|>assistant\n',
        { addSpecialTokens: false },
      );
      expect(dev.usage!.prompt_tokens).toBe(withSystem.length);
    } finally {
      await s.close();
    }
  });
});
