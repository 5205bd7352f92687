// The HTTP API's error catalogue. Every error the server sends, whatever raised it (our handlers,
// fastify's schema validation or body parser, the engine, the intervention registry), leaves in
// OpenAI's shape {"error": {message, type, param, code}} with a stable `code` from this table, so
// clients written against OpenAI handle them unchanged and ours can switch on `code`.

import { InvalidInputError, LimitExceededError, ManagedElsewhereError } from '../errors.ts';

export type OpenAIErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

/** Longest piece of client input echoed into a message (messages are also logged). */
export const MAX_ECHO_CHARS = 200;
/** Hard cap on any error message, whatever it echoes: a refusal must not be as large as the input. */
const MAX_MESSAGE_CHARS = 2000;

/** Client input as it may appear in a message or a log line: at most MAX_ECHO_CHARS of it. */
export function echo(value: unknown, max = MAX_ECHO_CHARS): string {
  const s = typeof value === 'string' ? value : String(JSON.stringify(value));
  return s.length <= max ? s : `${s.slice(0, max)}... (${s.length} characters)`;
}

const CATALOGUE = {
  invalid_value: { status: 400, type: 'invalid_request_error' },
  invalid_type: { status: 400, type: 'invalid_request_error' },
  missing_required_parameter: { status: 400, type: 'invalid_request_error' },
  unknown_parameter: { status: 400, type: 'invalid_request_error' },
  unsupported_parameter: { status: 400, type: 'invalid_request_error' },
  invalid_json: { status: 400, type: 'invalid_request_error' },
  context_length_exceeded: { status: 400, type: 'invalid_request_error' },
  /** X-Request-Id of a generation still running: ids scope per-request interventions. */
  request_id_in_use: { status: 400, type: 'invalid_request_error' },
  /** Node's HTTP parser refused the request (bad Content-Length, chunked encoding, ...). */
  invalid_http_request: { status: 400, type: 'invalid_request_error' },
  /** A generation request claimed request-scoped interventions without the admin token. */
  permission_denied: { status: 403, type: 'permission_error' },
  request_timeout: { status: 408, type: 'invalid_request_error' },
  request_too_large: { status: 413, type: 'invalid_request_error' },
  uri_too_long: { status: 414, type: 'invalid_request_error' },
  expectation_failed: { status: 417, type: 'invalid_request_error' },
  /** A WebSocket handshake the ws library refused (bad key, version, Upgrade header). */
  invalid_websocket_handshake: { status: 400, type: 'invalid_request_error' },
  /** GET /v1/monitor/stream without a WebSocket handshake. */
  upgrade_required: { status: 426, type: 'invalid_request_error' },
  headers_too_large: { status: 431, type: 'invalid_request_error' },
  unsupported_media_type: { status: 415, type: 'invalid_request_error' },
  invalid_api_key: { status: 401, type: 'authentication_error' },
  model_not_found: { status: 404, type: 'not_found_error' },
  intervention_not_found: { status: 404, type: 'not_found_error' },
  /** An intervention declared in the --interventions file: change the file, not the API. */
  intervention_managed_by_file: { status: 409, type: 'invalid_request_error' },
  /** The --max-interventions cap on live interventions. */
  too_many_interventions: { status: 429, type: 'rate_limit_error' },
  route_not_found: { status: 404, type: 'not_found_error' },
  method_not_allowed: { status: 405, type: 'invalid_request_error' },
  rate_limit_exceeded: { status: 429, type: 'rate_limit_error' },
  model_not_ready: { status: 503, type: 'server_error' },
  /** Proxy mode: the upstream's neurons are out of reach, so interventions cannot apply. */
  interventions_unavailable: { status: 409, type: 'invalid_request_error' },
  interventions_not_supported: { status: 400, type: 'invalid_request_error' },
  /** Proxy mode: the upstream refused the connection, or failed before its first byte. */
  upstream_unreachable: { status: 502, type: 'server_error' },
  upstream_timeout: { status: 504, type: 'server_error' },
  /** Proxy mode, in-stream only: the upstream connection failed after the response began. */
  upstream_stream_failed: { status: 502, type: 'server_error' },
  server_shutting_down: { status: 503, type: 'server_error' },
  internal_error: { status: 500, type: 'server_error' },
} as const satisfies Record<string, { status: number; type: OpenAIErrorType }>;

export type ErrorCode = keyof typeof CATALOGUE;

export interface OpenAIErrorBody {
  error: { message: string; type: OpenAIErrorType; param: string | null; code: ErrorCode };
}

export class ApiError extends Error {
  readonly status: number;
  readonly type: OpenAIErrorType;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly param: string | null = null,
    /** Extra response headers (Retry-After on 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(echo(message, MAX_MESSAGE_CHARS));
    this.name = 'ApiError';
    this.status = CATALOGUE[code].status;
    this.type = CATALOGUE[code].type;
  }

  toBody(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** One entry of fastify's `error.validation` (an ajv ErrorObject, the fields we read). */
interface ValidationIssue {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

interface FastifyishError {
  code?: string;
  statusCode?: number;
  validation?: ValidationIssue[];
  message?: string;
}

/** `/messages/0/content` -> `messages[0].content`, the way OpenAI names nested params. */
export function paramFromPointer(pointer: string): string | null {
  const parts = pointer.split('/').filter((p) => p !== '');
  if (parts.length === 0) return null;
  return parts
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, p, i) => (/^\d+$/.test(p) ? `${acc}[${p}]` : i === 0 ? p : `${acc}.${p}`), '');
}

const depth = (i: ValidationIssue) => i.instancePath.split('/').length;

/**
 * The issue worth reporting. Nullable and union parameters fail once per branch (a "minimum"
 * under the number branch, a "type" under the null branch, then the anyOf summary): the deepest
 * issue that is not about a branch's type says what is actually wrong; only when every branch
 * failed on type is it a type error.
 */
function mainIssue(issues: ValidationIssue[]): ValidationIssue {
  const concrete = issues.filter((i) => i.keyword !== 'anyOf' && i.keyword !== 'oneOf');
  const specific = concrete.filter((i) => i.keyword !== 'type');
  const pool = specific.length > 0 ? specific : concrete.length > 0 ? concrete : issues;
  return pool.reduce((best, i) => (depth(i) > depth(best) ? i : best));
}

/** The issues of the same kind at the same place (one per union branch). */
const siblings = (issues: ValidationIssue[], issue: ValidationIssue) =>
  issues.filter((i) => i.keyword === issue.keyword && i.instancePath === issue.instancePath);

function fromValidation(issues: ValidationIssue[]): ApiError {
  const issue = mainIssue(issues);
  const param = paramFromPointer(issue.instancePath);
  const where = param ?? 'body';
  switch (issue.keyword) {
    case 'additionalProperties': {
      const extra = String(issue.params.additionalProperty);
      const name = param ? `${param}.${extra}` : extra;
      return new ApiError('unknown_parameter', `Unrecognized request argument supplied: ${name}`, name);
    }
    case 'required': {
      const missing = String(issue.params.missingProperty);
      const name = param ? `${param}.${missing}` : missing;
      return new ApiError('missing_required_parameter', `Missing required parameter: '${name}'.`, name);
    }
    case 'type': {
      // A nullable or union parameter fails once per branch: name every type it accepts.
      const types = [...new Set(siblings(issues, issue).map((i) => String(i.params.type)))];
      return new ApiError(
        'invalid_type',
        `Invalid type for '${where}': expected ${types.join(' or ')}.`,
        param,
      );
    }
    case 'const': {
      // A union of literals (an enum) fails once per literal: list them all.
      const allowed = siblings(issues, issue).map((i) => JSON.stringify(i.params.allowedValue));
      return new ApiError(
        'invalid_value',
        `Invalid value for '${where}': must be one of ${allowed.join(', ')}.`,
        param,
      );
    }
    default:
      return new ApiError(
        'invalid_value',
        `Invalid value for '${where}': ${issue.message ?? 'not allowed'}.`,
        param,
      );
  }
}

/**
 * Maps anything thrown while handling a request to an ApiError. Unknown errors become a 500 whose
 * message says nothing about internals (the caller logs the original).
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof InvalidInputError) return new ApiError('invalid_value', err.message, err.param);
  if (err instanceof LimitExceededError) return new ApiError('too_many_interventions', err.message);
  if (err instanceof ManagedElsewhereError) return new ApiError('intervention_managed_by_file', err.message, 'id');
  const e = (err ?? {}) as FastifyishError;
  if (Array.isArray(e.validation) && e.validation.length > 0) return fromValidation(e.validation);
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new ApiError('invalid_json', 'The request body is not valid JSON.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError(
        'invalid_json',
        'The request body is empty but its content-type is application/json.',
      );
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('request_too_large', 'The request body is too large.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('unsupported_media_type', 'The request body must be application/json.');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError('invalid_value', 'The request body does not match its Content-Length.');
    case 'FST_ERR_BAD_URL':
      return new ApiError('invalid_value', 'The request URL is not valid (bad percent-encoding).');
    case 'FST_ERR_CTP_BODY_TOO_LARGE_FOR_CONTENT_LENGTH':
      return new ApiError('request_too_large', 'The request body is too large.');
  }
  // The router refuses a path parameter over maxParamLength; the message would echo the URL.
  if (e.statusCode === 414) return new ApiError('uri_too_long', 'The request URL is too long.');
  // Other client errors fastify raises (bad URL encoding, ...) keep their 4xx meaning.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.message) {
    return new ApiError('invalid_value', echo(e.message));
  }
  return new ApiError('internal_error', 'The server had an error while processing your request.');
}
