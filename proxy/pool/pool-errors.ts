// How pooling fails, each failure with its SQLSTATE, the client's message and the log's. Failures
// the upstream reports itself (a refused login, a failed statement) keep the upstream's SQLSTATE.
import { ProxyError } from '../errors.js';
import type { ErrorFields } from '../protocol/decode.js';

export const poolErrors = {
  startupRole: (name: string) =>
    new ProxyError(
      'startup_role',
      '0A000',
      `startup parameter "${name}" is not supported on a pooled session`,
      'Connect without it and use SET ROLE: a pooled backend changes hands, and a role set at login would outlive the session.',
    ),
  exhausted: (role: string, database: string, size: number, timeoutMs: number) =>
    new ProxyError(
      'pool_exhausted',
      '53300',
      `pool for role "${role}" on database "${database}" is exhausted (size ${size}); timed out after ${timeoutMs} ms`,
      'Raise pool_size, or pool_checkout_timeout if sessions are short.',
    ),
  loginRefused: (role: string, database: string, fields: ErrorFields) =>
    new ProxyError(
      'upstream_login_refused',
      fields.code ?? '08006',
      fields.message,
      fields.hint,
      `upstream refused the pooled login of role "${role}" on database "${database}": ${fields.message}`,
    ),
  noPassword: (role: string, method: string) =>
    new ProxyError(
      'connect_as_no_password',
      '28P01',
      `upstream asked for ${method} authentication of role "${role}", and no password is configured for it`,
      'Add the role to connect_as_passfile or to PGVPD_CONNECT_AS_PASSWORDS.',
    ),
  keysStale: (role: string) =>
    new ProxyError(
      'scram_keys_stale',
      '28P01',
      `password authentication failed for user "${role}"`,
      undefined,
      `SCRAM pass-through login of role "${role}": the server's salt or iteration count is not the verifier's the client was checked against (its password changed meanwhile)`,
    ),
  passThroughUnchecked: (role: string) =>
    new ProxyError(
      'scram_pass_through_unchecked',
      '28000',
      `upstream let role "${role}" in without checking a password; a SCRAM pass-through login needs it to`,
      'Make pg_hba.conf ask for scram-sha-256 for this role from the proxy.',
    ),
  loginTimeout: (host: string, port: number, timeoutMs: number) =>
    new ProxyError(
      'upstream_login_timeout',
      '08006',
      `login to upstream server ${host}:${port} timed out after ${timeoutMs} ms`,
    ),
  statementFailed: (fields: ErrorFields) =>
    new ProxyError(
      'upstream_statement_failed',
      fields.code ?? 'XX000',
      fields.message,
      fields.hint,
    ),
  sessionBroken: (backendPid: number, reason: string) =>
    new ProxyError(
      'pooled_session_broken',
      '08006',
      `pooled upstream session (backend ${backendPid}) is unusable: ${reason}`,
    ),
  closed: () =>
    new ProxyError(
      'pool_closed',
      '57P01',
      'terminating connection because the pgvpd proxy is shutting down',
    ),
} as const;
