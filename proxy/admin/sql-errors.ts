// THE one mapping from what the database said to what an HTTP client is told
// (docs/control-plane.md §2): 28000→401, 42501→403, 42704→404, 22023/22P02→400 (and
// 22021/22P05/54000, a parameter PostgreSQL cannot take, →400 with a fixed message),
// 23505/42939→409 (42501 only when pgvpd raised it: PostgreSQL's own "permission denied" is the
// server's misconfiguration, a 500), PV410→410, 08*/53*/57P0*/57014 and a connection that cannot be made→503 with
// Retry-After: 1, anything else→500 with a generic message and the request id (the log gets the
// cause). A serialization failure (40001) is retried once by `retryOnce`, then answered 503.
import pg from 'pg';
import { ApiError, apiErrors } from './api-error.js';

/** Errors of the connection itself (no SQLSTATE): the database is unavailable, not wrong. */
const connectionMessages =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/i;

function sqlstateOf(error: unknown): string | undefined {
  if (error instanceof pg.DatabaseError) return error.code;
  return undefined;
}

/** Whether the error says the database could not be reached or dropped the connection. */
export function isUnavailable(error: unknown): boolean {
  const code = sqlstateOf(error);
  if (code !== undefined) {
    return (
      code.startsWith('08') ||
      code.startsWith('53') ||
      code.startsWith('57P0') ||
      code === '57014' ||
      code === '40001'
    );
  }
  if (!(error instanceof Error)) return false;
  const systemCode = (error as NodeJS.ErrnoException).code;
  if (typeof systemCode === 'string' && /^E[A-Z]+$/.test(systemCode)) return true;
  return connectionMessages.test(error.message);
}

/**
 * The ApiError for an error thrown while calling the database, or undefined when it is not the
 * database's (the caller then answers 500 and logs it).
 */
export function apiErrorOf(error: unknown): ApiError | undefined {
  if (error instanceof ApiError) return error;
  if (isUnavailable(error)) return apiErrors.unavailable();
  const code = sqlstateOf(error);
  if (code === undefined) return undefined;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case '28000':
      return apiErrors.unauthorized();
    case '42501':
      // pgvpd's own refusals say `pgvpd: …`; PostgreSQL's "permission denied for function …"
      // means the HTTP server's login is not a member of pgvpd_api: the server's fault, a 500.
      return message.startsWith('pgvpd:') ? apiErrors.forbidden(message) : undefined;
    case '42704':
      return apiErrors.notFound(message);
    case '22023':
    case '22P02':
      return apiErrors.invalid(message);
    // Raised by PostgreSQL before the function runs, for a parameter it cannot take: a NUL
    // character (22021), a character without an equivalent in the server's encoding (22P05), a
    // value over one of its limits (54000). The client's input, so 400, in words of our own.
    case '22021':
    case '22P05':
      return apiErrors.invalid('a text value holds a character the database cannot store');
    case '54000':
      return apiErrors.invalid('a value exceeds a limit of the database');
    case '23505':
    case '42939':
      return apiErrors.conflict(message);
    case 'PV410':
      return apiErrors.gone();
    default:
      return undefined;
  }
}

/** Runs `work`; a serialization failure (40001) runs it once more. */
export async function retryOnce<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (sqlstateOf(error) !== '40001') throw error;
    return work();
  }
}
