// What an HTTP client of the control plane is told when a request fails: a status, a stable
// `error` code and a message, sent as `{"error":"<code>","message":"<text>"}`, plus the headers
// the status needs (WWW-Authenticate on 401, Retry-After on 503). Fixed bodies live here, so that
// every path that answers "invalid token" or "invite gone" sends the same bytes.

export type ErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'invalid'
  | 'conflict'
  | 'gone'
  | 'unsupported_media_type'
  | 'too_many_requests'
  | 'unavailable'
  | 'internal';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  /** The response body. */
  body(): { error: ErrorCode; message: string } {
    return { error: this.code, message: this.message };
  }
}

export const apiErrors = {
  /** One body for a missing, unknown, malformed, revoked or expired token. */
  unauthorized: () =>
    new ApiError(401, 'unauthorized', 'a valid API token is required', {
      'www-authenticate': 'Bearer',
    }),
  /** A token of another scope or org; says nothing about the org asked for. */
  forbidden: (message = 'this token is not allowed here') =>
    new ApiError(403, 'forbidden', message),
  notFound: (message = 'not found') => new ApiError(404, 'not_found', message),
  invalid: (message: string) => new ApiError(400, 'invalid', message),
  conflict: (message: string) => new ApiError(409, 'conflict', message),
  /** One body for every invite that cannot be used: unknown, malformed, expired, revoked, used. */
  gone: () => new ApiError(410, 'gone', 'this invite cannot be used'),
  unsupportedMediaType: () =>
    new ApiError(415, 'unsupported_media_type', 'the body must be application/json'),
  tooManyRequests: (seconds: number) =>
    new ApiError(429, 'too_many_requests', `too many requests; retry in ${String(seconds)} s`),
  unavailable: (message = 'the database is unavailable; retry shortly') =>
    new ApiError(503, 'unavailable', message, { 'retry-after': '1' }),
  /** Nothing of the cause: the log has it, under the same request id. */
  internal: (requestId: string) =>
    new ApiError(500, 'internal', `internal error (request ${requestId})`),
} as const;
