// Statements the proxy runs itself on a pooled session while no client is attached: the setup
// before a client gets it (signed context, the client's startup parameters) and the reset after.
// One unnamed extended-protocol round (§55.2.3) and the reset (one simple Query message), each
// read up to ReadyForQuery. Only one statement at a time per session; the caller serialises. A
// release sends its reset ahead of the restore of the owner's context (pool/switch.ts), in one
// write.
import { randomBytes } from 'node:crypto';
import { serialize } from '../protocol/encode.js';
import { proxyErrors } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import type { Message } from '../protocol/reader.js';
import { poolErrors } from './pool-errors.js';
import type { PooledSession } from '../upstream/login.js';
import {
  bufferedUpstreamMessage,
  commandTag,
  errorFields,
  parameterStatus,
  upstreamMessage,
  type ErrorFields,
} from '../protocol/decode.js';

/** Parse/Bind/Execute/Sync of an unnamed statement with text parameters (values stay out of SQL). */
export async function runExtended(
  session: PooledSession,
  sql: string,
  params: string[],
): Promise<void> {
  usable(session);
  session.socket.write(
    Buffer.concat([
      serialize.parse({ text: sql }),
      serialize.bind({ values: params }),
      serialize.execute(),
      serialize.sync(),
    ]),
  );
  await untilReady(session);
}

function usable(session: PooledSession): void {
  if (session.broken || session.socket.destroyed)
    throw poolErrors.sessionBroken(session.backendPid, 'connection closed');
}

async function next(session: PooledSession, phase: string): Promise<Message> {
  try {
    return await upstreamMessage(session.reader, phase);
  } catch (error) {
    session.broken = true;
    throw error;
  }
}

/** next() without waiting: the next message when it is buffered whole, else undefined. */
function nextBuffered(session: PooledSession, phase: string): Message | undefined {
  try {
    return bufferedUpstreamMessage(session.reader, phase);
  } catch (error) {
    session.broken = true;
    throw error;
  }
}

async function untilReady(session: PooledSession): Promise<void> {
  let failure: ErrorFields | undefined;
  for (;;) {
    const message =
      nextBuffered(session, 'a pooled statement') ?? (await next(session, 'a pooled statement'));
    switch (message.code) {
      case BackendCode.ErrorResponse:
        failure ??= errorFields(message.body);
        continue;
      case BackendCode.ParameterStatus: {
        const [name, value] = parameterStatus(message.body);
        session.parameters.set(name, value);
        continue;
      }
      case BackendCode.ReadyForQuery:
        if (failure) throw poolErrors.statementFailed(failure);
        return;
      case BackendCode.NoticeResponse:
      case BackendCode.NotificationResponse:
      case BackendCode.ParseComplete:
      case BackendCode.BindComplete:
      case BackendCode.ParameterDescription:
      case BackendCode.RowDescription:
      case BackendCode.NoData:
      case BackendCode.DataRow:
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        continue;
      default:
        // COPY and the like: the pool cannot drive them, and the session's state is now unknown.
        session.broken = true;
        throw proxyErrors.upstreamProtocol(
          `message type ${String.fromCharCode(message.code)} in answer to a pooled statement`,
        );
    }
  }
}

/**
 * A session's whole state, as DISCARD ALL drops it (cursors, role and session authorization,
 * settings, prepared statements, LISTEN, advisory locks, temp tables, sequences), less DISCARD
 * PLANS, as one Query (one implicit transaction), with the tag each statement answers. Plans are
 * kept because they hold no data and no context: a policy's accessor call runs at every execution,
 * and a plan over a dropped temp table is invalidated with the table. Dropping them made the next
 * switch_context re-plan its PL/pgSQL body: about three times the backend CPU of an owner change
 * (docs/benchmarks.md).
 */
export const stateReset = {
  sql:
    'CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; ' +
    'SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES',
  tags: [
    'CLOSE CURSOR ALL',
    'SET',
    'RESET',
    'DEALLOCATE ALL',
    'UNLISTEN',
    'SELECT 1',
    'DISCARD TEMP',
    'DISCARD SEQUENCES',
  ],
} as const;

/**
 * A release's reset as one Query message: `ROLLBACK` first ends whatever transaction the client
 * left (open or aborted), and the state reset (stateReset) runs after it in an implicit
 * transaction of its own (§55.2.2.1: a ROLLBACK in a multi-statement Query closes the block it
 * ends, and the statements after it run in a new one). DISCARD ALL itself cannot share a query
 * string, hence stateReset. When the backend was last seen idle the ROLLBACK is left out: on an
 * idle backend it only says WARNING "there is no transaction in progress", which PostgreSQL also
 * writes to its log, once per release. Left out wrongly (the guess in pool/lend.ts is made from
 * the last bytes the backend sent), the reset runs inside the client's transaction block and ends
 * not idle, or fails, or meets answers still owed to the client: the session is ended, never
 * reused. (An extended-protocol implicit transaction, Execute without Sync, would be committed by
 * the reset; it cannot look idle: its last answer is never a ReadyForQuery, and data rows ending
 * like one are followed by their CommandComplete, which fails the reset's check.)
 *
 * The reset ends with `SELECT '<nonce>'`, a value drawn for this release that no client ever
 * sees: its row proves that the answer read is the reset's own. A client that queued statements
 * and left before their answers came could otherwise have them taken for the reset's (the same
 * command tags are easy to produce) while the real reset runs later, on a backend already lent to
 * someone else; with the nonce such an answer fails the check and the backend is ended.
 */
const resetBodies = {
  rollback: { sql: `ROLLBACK; ${stateReset.sql}`, tags: ['ROLLBACK', ...stateReset.tags] },
  idle: { sql: stateReset.sql, tags: [...stateReset.tags] },
} as const;
type ResetKind = keyof typeof resetBodies;

interface ReleaseReset {
  message: Buffer;
  tags: readonly string[];
  nonce: string;
}

function releaseReset(kind: ResetKind): ReleaseReset {
  const nonce = randomBytes(12).toString('hex');
  const body = resetBodies[kind];
  return {
    message: serialize.query(`${body.sql}; SELECT '${nonce}'`),
    tags: [...body.tags, 'SELECT 1'],
    nonce,
  };
}

/** Why a released session cannot be reset as it is, before anything is sent; else undefined. */
export function resetRefused(session: PooledSession): string | undefined {
  if (session.broken || session.socket.destroyed) return 'connection closed';
  if (session.reader.pending > 0) return 'unread output from the last client';
  return undefined;
}

/** A release's reset sent ahead of other messages in one write (SessionPool.release). */
export interface ResetAhead {
  /** The reset's Query message, to go first in the caller's write. */
  readonly message: Buffer;
  /** Reads the reset's answer: undefined when it proved the session clean and idle, else why not. */
  answered(): Promise<string | undefined>;
}

/** A reset sent ahead of other messages did not prove the session clean (the message says why). */
export class ResetFailed extends Error {
  override name = 'ResetFailed';
}

/** `idle`: the backend was last seen idle (no transaction to end: no ROLLBACK). */
export function resetAhead(session: PooledSession, timeoutMs: number, idle = false): ResetAhead {
  const reset = releaseReset(idle ? 'idle' : 'rollback');
  return { message: reset.message, answered: () => resetAnswered(session, timeoutMs, reset) };
}

/**
 * Resets a session a client has left (releaseReset): one Query, read up to its ReadyForQuery.
 *
 * The answer must be exactly what these statements produce; anything else (results of a
 * statement the client left behind, COPY, a message completing bytes the client left half-sent)
 * means the session's state is not known, and it must not be reused. Resolves to undefined when
 * the session is clean and idle, else to the reason it is not.
 */
export async function resetSession(
  session: PooledSession,
  timeoutMs: number,
  idle = false,
): Promise<string | undefined> {
  const refused = resetRefused(session);
  if (refused !== undefined) return refused;
  const reset = releaseReset(idle ? 'idle' : 'rollback');
  session.socket.write(reset.message);
  const reason = await resetAnswered(session, timeoutMs, reset);
  if (reason === undefined && session.reader.pending > 0) return 'more output after the reset';
  return reason;
}

async function resetAnswered(
  session: PooledSession,
  timeoutMs: number,
  reset: ReleaseReset,
): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
  });
  const check = checkReset(session, reset);
  // After a timeout the read stays pending until the caller destroys the socket.
  check.catch(() => undefined);
  try {
    return await Promise.race([
      check.catch((error: unknown) => (error as Error).message),
      deadline,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function checkReset(
  session: PooledSession,
  reset: ReleaseReset,
): Promise<string | undefined> {
  const tags = reset.tags;
  const last = tags.length - 1;
  let completed = 0;
  let proven = false;
  for (;;) {
    const phase = 'the reset of a pooled session';
    const message = nextBuffered(session, phase) ?? (await next(session, phase));
    const code = message.code;
    if (code === BackendCode.NoticeResponse) continue;
    if (code === BackendCode.NotificationResponse) continue;
    if (code === BackendCode.ParameterStatus) {
      const [name, value] = parameterStatus(message.body);
      session.parameters.set(name, value);
      continue;
    }
    // A SELECT's row, before its tag: pg_advisory_unlock_all's, and the nonce's, which must be
    // this reset's nonce.
    if (code === BackendCode.RowDescription || code === BackendCode.DataRow) {
      if (tags[completed] !== 'SELECT 1') return unexpected(code);
      if (code === BackendCode.DataRow && completed === last) {
        if (proven || onlyValue(message.body) !== reset.nonce)
          return "a row that is not the reset's own in answer to it";
        proven = true;
      }
      continue;
    }
    if (code === BackendCode.CommandComplete && completed < tags.length) {
      const tag = commandTag(message.body);
      const wanted = tags[completed];
      if (tag !== wanted) return `unexpected ${JSON.stringify(tag)} in answer to ${String(wanted)}`;
      completed += 1;
      continue;
    }
    if (code === BackendCode.ReadyForQuery && completed === tags.length) {
      if (!proven) return "no row of the reset's own in answer to it";
      if (message.body[0] !== 0x49) return 'not idle after the reset';
      break;
    }
    if (code === BackendCode.ErrorResponse)
      return `the reset failed: ${errorFields(message.body).message}`;
    return unexpected(code);
  }
  return undefined;
}

function unexpected(code: number): string {
  return `unexpected message type ${String.fromCharCode(code)} in answer to the reset`;
}

/** The one column of a one-column DataRow, as text; undefined for any other shape or NULL. */
function onlyValue(body: Buffer): string | undefined {
  if (body.length < 6 || body.readInt16BE(0) !== 1) return undefined;
  const length = body.readInt32BE(2);
  if (length < 0 || body.length !== 6 + length) return undefined;
  return body.toString('latin1', 6);
}
