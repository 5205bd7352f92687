// What every route handler shares: the services that exist once the model is loaded (engine,
// intervention registry, telemetry, chat formatter), the scheduler and the auth checks.
// app.ts builds it; routes read it.

import type { IncomingHttpHeaders } from 'node:http';
import type { onRequestHookHandler } from 'fastify';
import type { Engine } from '../../runtime/types.ts';
import type { Tokenizer } from '../../model/tokenizer.ts';
import type { Catalogue } from '../../monitor/catalogue.ts';
import type { InterventionRegistry } from '../../monitor/interventions.ts';
import type { ChatFormatter } from '../chat-template.ts';
import type { PromptEncoder } from '../tokenize/prompt-encoder.ts';
import type { Scheduler } from '../scheduler.ts';
import type { Telemetry } from '../telemetry/index.ts';

/** The neurons the sidecar reports on every token, as LAYER.INDEX addresses. */
export interface NeuronCatalogue {
  entropy: string[];
  frequency: string[];
}

/** The engine as the server uses it: the Engine contract plus its catalogue and tokenizer. */
export interface ServerEngine extends Engine {
  readonly catalogue: NeuronCatalogue;
  /** Token pieces for logprobs, and the chat template with its special tokens. */
  readonly tokenizer: Pick<
    Tokenizer,
    'tokenText' | 'tokenBytes' | 'chatTemplate' | 'bosTokenId' | 'eosTokenId' | 'specialTokens'
  > &
    // A real tokenizer has these: its folder (tokenizer workers load it), markup-aware encoding,
    // and the longest token (cheap context-length refusals before tokenizing).
    Partial<Pick<Tokenizer, 'dir' | 'encodeSegments' | 'maxTokenBytes'>>;
}

/** The part of Telemetry (src/server/telemetry) the HTTP layer calls. */
export type ServerTelemetry = Pick<
  Telemetry,
  'setQueue' | 'requestRejected' | 'requestStarted' | 'interventionChanged'
> &
  Partial<Pick<Telemetry, 'registry' | 'attachWebSocket' | 'close' | 'fieldsIgnored' | 'engineStep'>>;

/** Everything that exists only once the model is loaded. */
export interface ReadyServices {
  engine: ServerEngine;
  registry: InterventionRegistry;
  telemetry: ServerTelemetry;
  chat: ChatFormatter;
  /** The full catalogue the watched set came from, when the loader had one (GET /v1/neurons). */
  catalogue?: Catalogue | null;
  /** Prompt tokenization, off the main thread. */
  encoder: PromptEncoder;
  /** Bytes of prompt text beyond which it cannot fit the context, whatever it says; or Infinity. */
  maxPromptBytes(): number;
}

export interface ServerContext {
  /** The loaded services; throws a 503 ApiError while the model loads or the server shuts down. */
  ready(): ReadyServices;
  /** Telemetry if it exists yet (for counting refused requests). */
  telemetry(): ServerTelemetry | null;
  scheduler: Scheduler;
  /** Generations in flight by request id: shutdown aborts them, and an id is in use once at a time. */
  generations: Map<string, AbortController>;
  /** onRequest hooks answering 401 unless the request carries the right bearer token. */
  requireApiKey: onRequestHookHandler;
  requireAdmin: onRequestHookHandler;
  /** The most choices (n) one request may ask for (--max-n). */
  maxN: number;
  /** Request fields this server does not know: refused (400 naming the field) or dropped with a warning. */
  unknownFields: UnknownFields;
  /** /metrics: the metrics token, else the API key, else open (see README, "Access"). */
  requireMetrics: onRequestHookHandler;
  /** Whether a request carries the admin token (true when the admin API is open). */
  isAdmin(headers: IncomingHttpHeaders): boolean;
  /** How long a streaming client may read nothing before its generation is aborted. */
  streamIdleTimeoutMs: number;
}

export type UnknownFields = 'reject' | 'ignore';
