// How an operation fails: an OperationError with a stable kind (what a caller branches on, e.g.
// an HTTP status), the SQLSTATE when PostgreSQL raised it, and the message. Every error that
// leaves an exported operation is one: PostgreSQL's own errors and connection failures are
// wrapped, the original kept as `cause`, so that the CLI can still print it exactly as before.

/**
 * not_found        no such org, user or server (ours), or SQLSTATE 42704 / 3D000
 * conflict         taken or existing already: 23505, 42P04, 42710
 * invalid_input    a value the operation or the SQL refuses: 22023 and the rest of class 22,
 *                  42939 (reserved name), a purge confirmation that is not the org's name
 * not_permitted    42501: a connect_as role with privileges it must not have, a missing grant
 * in_use           55006: a server that still holds orgs
 * not_installed    3F000 / 42883 naming pgvpd: pgvpd's SQL is not installed in the database
 * server_db_required  a dedicated org's server needs a superuser connection string (serverDb)
 * not_purgeable    a shared org whose rows live outside the catalog's database
 * database         any other error PostgreSQL raised (sqlstate says which)
 * connection       the database could not be reached, or the connection was lost
 * internal         anything else (a bug, pgvpd's SQL missing from the package)
 */
export type OperationErrorKind =
  | 'not_found'
  | 'conflict'
  | 'invalid_input'
  | 'not_permitted'
  | 'in_use'
  | 'not_installed'
  | 'server_db_required'
  | 'not_purgeable'
  | 'database'
  | 'connection'
  | 'internal';

export interface OperationErrorOptions {
  sqlstate?: string | undefined;
  detail?: string | undefined;
  hint?: string | undefined;
  cause?: unknown;
  warnings?: readonly string[];
}

export class OperationError extends Error {
  override readonly name = 'OperationError';
  readonly kind: OperationErrorKind;
  /** Set only when PostgreSQL raised the error. */
  readonly sqlstate: string | undefined;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  /** What went wrong besides the failure itself (e.g. a database that could not be dropped). */
  readonly warnings: readonly string[];

  constructor(kind: OperationErrorKind, message: string, options: OperationErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.sqlstate = options.sqlstate;
    this.detail = options.detail;
    this.hint = options.hint;
    this.warnings = options.warnings ?? [];
  }

  /** The same error with more warnings, for a step that noticed something on the way out. */
  withWarnings(warnings: readonly string[]): OperationError {
    if (warnings.length === 0) return this;
    return new OperationError(this.kind, this.message, {
      sqlstate: this.sqlstate,
      detail: this.detail,
      hint: this.hint,
      cause: this.cause,
      warnings: [...warnings, ...this.warnings],
    });
  }
}

interface PgErrorFields {
  code?: unknown;
  severity?: unknown;
  detail?: unknown;
  hint?: unknown;
}

function kindOfSqlstate(sqlstate: string, message: string): OperationErrorKind {
  switch (sqlstate) {
    case '42704':
    case '3D000':
      return 'not_found';
    case '23505':
    case '42P04':
    case '42710':
      return 'conflict';
    case '42939':
      return 'invalid_input';
    case '42501':
      return 'not_permitted';
    case '55006':
      return 'in_use';
    case '3F000':
    case '42883':
      return message.includes('pgvpd') ? 'not_installed' : 'database';
    default:
      return sqlstate.startsWith('22') ? 'invalid_input' : 'database';
  }
}

function isConnectionFailure(error: Error): boolean {
  const code = (error as Error & { code?: unknown }).code;
  return (
    (typeof code === 'string' && /^E[A-Z]+$/.test(code)) ||
    /^Connection terminated|^timeout expired/i.test(error.message)
  );
}

/** Any error as an OperationError; an OperationError is returned as it is. */
export function toOperationError(error: unknown): OperationError {
  if (error instanceof OperationError) return error;
  if (!(error instanceof Error))
    return new OperationError('internal', String(error), { cause: error });
  const fields = error as Error & PgErrorFields;
  if (typeof fields.code === 'string' && typeof fields.severity === 'string') {
    return new OperationError(kindOfSqlstate(fields.code, error.message), error.message, {
      sqlstate: fields.code,
      detail: typeof fields.detail === 'string' ? fields.detail : undefined,
      hint: typeof fields.hint === 'string' ? fields.hint : undefined,
      cause: error,
    });
  }
  return new OperationError(isConnectionFailure(error) ? 'connection' : 'internal', error.message, {
    cause: error,
  });
}

/** Runs an operation's body so that whatever it throws is an OperationError. */
export async function operation<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    throw toOperationError(error);
  }
}
