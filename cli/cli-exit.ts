// How a command ends unsuccessfully. A command that has already said what went wrong (lint
// findings, doctor's FAIL lines) throws CliExit with no message and only sets the exit code; a
// command that cannot run at all throws CliExit with the message to print. It is a CommanderError,
// so commander's own failures (unknown option, missing argument, --help, --version) and ours reach
// the caller in one shape: an error with an exitCode.
import { CommanderError } from 'commander';
import type { CliIo } from './io.js';
import { OperationError } from './operations/errors.js';

export class CliExit extends CommanderError {
  constructor(exitCode: number, message = '') {
    super(exitCode, 'pgvpd.exit', message);
  }
}

interface PgErrorFields {
  code?: unknown;
  severity?: unknown;
  detail?: unknown;
  hint?: unknown;
}

/** SQLSTATEs PostgreSQL raises when pgvpd's schema or functions are not there at all. */
const missingObjectStates = new Set(['3F000', '42883']);

/**
 * The lines printed for an error nobody expected to handle: its message, and for a PostgreSQL
 * error its SQLSTATE, detail and hint, since those say what to do about it.
 */
export function formatFailure(error: unknown): string {
  if (!(error instanceof Error)) return `error: ${String(error)}\n`;
  const fields = error as Error & PgErrorFields;
  const isPg = typeof fields.code === 'string' && typeof fields.severity === 'string';
  if (!isPg) return `error: ${error.message}\n`;
  const code = fields.code as string;
  let text = `error: ${error.message} (SQLSTATE ${code})\n`;
  if (typeof fields.detail === 'string') text += `detail: ${fields.detail}\n`;
  if (typeof fields.hint === 'string') text += `hint: ${fields.hint}\n`;
  else if (missingObjectStates.has(code) && error.message.includes('pgvpd')) {
    text += 'hint: is pgvpd installed in this database? Run pgvpd setup\n';
  }
  return text;
}

/**
 * What a command throws when an operation (cli/operations/) fails, so that the CLI says what it
 * said before the operations existed: the operation's warnings first (`warning: ...` on stderr),
 * then, for an error PostgreSQL or the connection raised, that original error (runCli prints its
 * SQLSTATE, detail and hint), and for one the operation raised itself its message (exit code 1).
 * Any other error is returned as it is.
 */
export function cliFailure(error: unknown, io: CliIo): unknown {
  if (!(error instanceof OperationError)) return error;
  for (const warning of error.warnings) io.err(`warning: ${warning}\n`);
  if (error.cause !== undefined) return error.cause;
  return new CliExit(1, error.message);
}

/** A command's action whose operation failures end the command as cliFailure says. */
export function operationAction<A extends unknown[]>(
  io: CliIo,
  action: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await action(...args);
    } catch (error) {
      throw cliFailure(error, io);
    }
  };
}
