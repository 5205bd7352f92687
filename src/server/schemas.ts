// TypeBox schemas of the HTTP API: request bodies (validated by fastify's ajv, configured in
// app.ts to reject unknown properties and never coerce types) and the fixed-shape responses
// (serialized through them). The OpenAI parameters this server cannot honour are declared as
// `Unknown` here so they pass the schema and reach `rejectUnsupported` in routes/openai-params.ts,
// which answers with a message naming the parameter instead of a generic "unknown property".

import { Type, type Static, type TSchema } from '@sinclair/typebox';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

// Every number has a range: JSON numbers reach 1.8e308, and a value past what the code does with
// it (a Date, a float32 graph input, a sampler count) must be a 400, not a 500 or garbage output.

/** The largest finite float32: intervention values go into float32 graph inputs. */
export const FLOAT32_MAX = 3.4028234663852886e38;
/** Longest TTL: about 31.7 years (a Date holds at most 8.64e15 ms). */
export const MAX_TTL_S = 1e9;
/** Counts (tokens, top_k): far above any context, well inside int32. */
const MAX_COUNT = 2_147_483_647;

const Float32Value = Type.Number({ minimum: -FLOAT32_MAX, maximum: FLOAT32_MAX });
/** The neuron address LAYER.INDEX; the registry parses it. */
const NeuronAddress = Type.String({ minLength: 1, maxLength: 32, description: 'LAYER.INDEX, e.g. "11.584"' });

// ---------------------------------------------------------------- shared request parts

export const InterventionMode = Type.Union([
  Type.Literal('clamp'),
  Type.Literal('scale'),
  Type.Literal('add'),
  Type.Literal('mean_ablate'),
  /** A confidence target: value = the entropy (nats) to steer toward (monitor/entropy-target.ts). */
  Type.Literal('target_entropy'),
]);

/** target_entropy only: the neurons it drives (default: the catalogue's leading entropy neurons). */
const TargetNeurons = Type.Array(NeuronAddress, { minItems: 1, maxItems: 64 });

/** Extension: an intervention that lives as long as the request that carries it. */
export const RequestIntervention = Type.Object(
  {
    neuron: Type.Optional(NeuronAddress),
    neurons: Type.Optional(TargetNeurons),
    mode: InterventionMode,
    value: Type.Optional(Float32Value),
  },
  { additionalProperties: false },
);
export type RequestIntervention = Static<typeof RequestIntervention>;

const StopParam = Nullable(
  Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { maxItems: 4 })]),
);

const StreamOptions = Nullable(
  Type.Object({ include_usage: Type.Optional(Nullable(Type.Boolean())) }, { additionalProperties: false }),
);

/** Parameters both endpoints share, OpenAI's and ours. */
const commonProperties = {
  model: Type.String({ minLength: 1, maxLength: 256 }),
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: MAX_COUNT }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 1 }))),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(StreamOptions),
  stop: Type.Optional(StopParam),
  seed: Type.Optional(
    Nullable(Type.Integer({ minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER })),
  ),
  /** OpenAI's end-user id for abuse monitoring: accepted for compatibility, no effect. */
  user: Type.Optional(Nullable(Type.String())),
  /** Choices to generate; the upper bound is the server's --max-n (checked in openai-params.ts). */
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  frequency_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  presence_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  /** Token id (as a string key) -> bias in [-100, 100]; keys and range checked in openai-params.ts. */
  logit_bias: Type.Optional(Nullable(Type.Record(Type.String(), Type.Number()))),
  // vLLM's sampling extensions, spelled as vLLM spells them.
  /** Sample only among the k most likely tokens (0 = off), as vLLM and llama.cpp accept it. */
  top_k: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: MAX_COUNT }))),
  min_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  repetition_penalty: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 10 }))),
  stop_token_ids: Type.Optional(Nullable(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 64 }))),
  ignore_eos: Type.Optional(Nullable(Type.Boolean())),
  min_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: MAX_COUNT }))),
  // Extensions of this server.
  interventions: Type.Optional(Nullable(Type.Array(RequestIntervention, { maxItems: 64 }))),
  confidence: Type.Optional(Nullable(Type.Boolean())),
};

// ---------------------------------------------------------------- POST /v1/completions

export const CompletionRequest = Type.Object(
  {
    ...commonProperties,
    prompt: Type.Union([
      Type.String(),
      Type.Array(Type.String(), { minItems: 1 }),
      Type.Array(Type.Integer({ minimum: 0, maximum: MAX_COUNT }), { minItems: 1 }),
      Type.Array(Type.Array(Type.Integer({ minimum: 0, maximum: MAX_COUNT })), { minItems: 1 }),
    ]),
    /** Legacy logprobs: how many alternatives per token (0 = only the chosen token's). */
    logprobs: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 5 }))),
    best_of: Type.Optional(Type.Unknown()),
    /** Prepend the prompt to each choice (with its logprobs when logprobs is set). */
    echo: Type.Optional(Nullable(Type.Boolean())),
    suffix: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
export type CompletionRequest = Static<typeof CompletionRequest>;

// ---------------------------------------------------------------- POST /v1/chat/completions

const ContentPart = Type.Object(
  { type: Type.String(), text: Type.Optional(Type.String()) },
  { additionalProperties: true },
);

export const ChatMessageIn = Type.Object(
  {
    role: Type.String(),
    content: Type.Optional(Nullable(Type.Union([Type.String(), Type.Array(ContentPart)]))),
    name: Type.Optional(Type.String()),
    /** Sent back by clients that replay a whole assistant message; must be null. */
    refusal: Type.Optional(Type.Unknown()),
    tool_calls: Type.Optional(Type.Unknown()),
    tool_call_id: Type.Optional(Type.Unknown()),
    function_call: Type.Optional(Type.Unknown()),
    audio: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
export type ChatMessageIn = Static<typeof ChatMessageIn>;

export const ChatCompletionRequest = Type.Object(
  {
    ...commonProperties,
    messages: Type.Array(ChatMessageIn, { minItems: 1 }),
    max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: MAX_COUNT }))),
    logprobs: Type.Optional(Nullable(Type.Boolean())),
    top_logprobs: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 20 }))),
    response_format: Type.Optional(Type.Unknown()),
    tools: Type.Optional(Type.Unknown()),
    tool_choice: Type.Optional(Type.Unknown()),
    functions: Type.Optional(Type.Unknown()),
    function_call: Type.Optional(Type.Unknown()),
    parallel_tool_calls: Type.Optional(Type.Unknown()),
    store: Type.Optional(Type.Unknown()),
    metadata: Type.Optional(Type.Unknown()),
    service_tier: Type.Optional(Type.Unknown()),
    modalities: Type.Optional(Type.Unknown()),
    audio: Type.Optional(Type.Unknown()),
    prediction: Type.Optional(Type.Unknown()),
    reasoning_effort: Type.Optional(Type.Unknown()),
    web_search_options: Type.Optional(Type.Unknown()),
    verbosity: Type.Optional(Type.Unknown()),
    prompt_cache_key: Type.Optional(Type.Unknown()),
    safety_identifier: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
export type ChatCompletionRequest = Static<typeof ChatCompletionRequest>;

// ---------------------------------------------------------------- interventions API

export const CreateInterventionRequest = Type.Object(
  {
    neuron: Type.Optional(Nullable(NeuronAddress)),
    neurons: Type.Optional(Nullable(TargetNeurons)),
    mode: InterventionMode,
    value: Type.Optional(Nullable(Float32Value)),
    ttl_s: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: MAX_TTL_S }))),
    /** The X-Request-Id it applies to: the same characters the server accepts in that header. */
    request_id: Type.Optional(Nullable(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,128}$' }))),
  },
  { additionalProperties: false },
);
export type CreateInterventionRequest = Static<typeof CreateInterventionRequest>;

export const InterventionView = Type.Object({
  object: Type.Literal('intervention'),
  id: Type.String(),
  neuron: Type.String(),
  mode: InterventionMode,
  /** The value applied; for mean_ablate the calibration mean it resolved to. */
  value: Type.Number(),
  /** ISO 8601 times, as the monitor stream's intervention events carry them. */
  created_at: Type.String(),
  /** null = until removed. */
  expires_at: Nullable(Type.String()),
  /** Set when the intervention applies to one request only. */
  request_id: Nullable(Type.String()),
  /** Every neuron it acts on (one, except for target_entropy). */
  neurons: Type.Array(Type.String()),
  /** api, request (a generation's own list), file (--interventions: not deletable here) or cli. */
  source: Type.Union([Type.Literal('api'), Type.Literal('request'), Type.Literal('file'), Type.Literal('cli')]),
  /** For file interventions, the file that declares them. */
  origin: Nullable(Type.String()),
});
export type InterventionView = Static<typeof InterventionView>;

export const InterventionList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(InterventionView),
});
export type InterventionList = Static<typeof InterventionList>;

export const DeletedIntervention = Type.Object({
  id: Type.String(),
  object: Type.Literal('intervention.deleted'),
  deleted: Type.Literal(true),
  intervention: InterventionView,
});

export const InterventionIdParams = Type.Object({ id: Type.String() });

// ---------------------------------------------------------------- models, neurons, health

export const ModelView = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
});

export const ModelList = Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelView) });

export const ModelIdParams = Type.Object({ model: Type.String() });

// GET /v1/neurons: its response schema lives with the route (routes/neurons.ts).
