// Statements the proxy runs itself on a pooled session while no client is attached: the setup
// before a client gets it (signed context, the client's startup parameters) and the reset after.
// One unnamed extended-protocol round (§55.2.3) and the reset (two simple Query messages), each read up to
// ReadyForQuery. Only one statement at a time per session; the caller serialises.
import { serialize } from '../protocol/encode.js';
import { proxyErrors } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import type { Message } from '../protocol/reader.js';
import { poolErrors } from './pool-errors.js';
import type { PooledSession } from '../upstream/login.js';
import {
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

async function untilReady(session: PooledSession): Promise<void> {
  let failure: ErrorFields | undefined;
  for (;;) {
    const message = await next(session, 'a pooled statement');
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

/** The two Query messages of a release's reset, in order: ROLLBACK, then the state reset. */
const resetSteps: readonly { sql: string; tags: readonly string[] }[] = [
  { sql: 'ROLLBACK', tags: ['ROLLBACK'] },
  stateReset,
];
const resetMessages = Buffer.concat(resetSteps.map((step) => serialize.query(step.sql)));

/**
 * Resets a session a client has left: `ROLLBACK` ends any transaction (a warning if none), then
 * the state reset (stateReset) drops everything else of the session's state. They go as two Query
 * messages, so that the reset runs after the client's transaction has ended whatever it was.
 *
 * The answer must be exactly what these statements produce; anything else (results of a
 * statement the client left behind, COPY, a message completing bytes the client left half-sent)
 * means the session's state is not known, and it must not be reused. Resolves to undefined when
 * the session is clean and idle, else to the reason it is not.
 */
export async function resetSession(
  session: PooledSession,
  timeoutMs: number,
): Promise<string | undefined> {
  if (session.broken || session.socket.destroyed) return 'connection closed';
  if (session.reader.pending > 0) return 'unread output from the last client';
  session.socket.write(resetMessages);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
  });
  const check = checkReset(session);
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

async function checkReset(session: PooledSession): Promise<string | undefined> {
  for (const [index, step] of resetSteps.entries()) {
    const last = index === resetSteps.length - 1;
    let completed = 0;
    for (;;) {
      const message = await next(session, 'the reset of a pooled session');
      const code = message.code;
      if (code === BackendCode.NoticeResponse) continue;
      if (code === BackendCode.NotificationResponse) continue;
      if (code === BackendCode.ParameterStatus) {
        const [name, value] = parameterStatus(message.body);
        session.parameters.set(name, value);
        continue;
      }
      // The SELECT of pg_advisory_unlock_all: its row, before its tag.
      if (code === BackendCode.RowDescription || code === BackendCode.DataRow) {
        if (step.tags[completed] === 'SELECT 1') continue;
      }
      if (code === BackendCode.CommandComplete && completed < step.tags.length) {
        const tag = commandTag(message.body);
        const wanted = step.tags[completed];
        if (tag !== wanted)
          return `unexpected ${JSON.stringify(tag)} in answer to ${String(wanted)}`;
        completed += 1;
        continue;
      }
      if (code === BackendCode.ReadyForQuery && completed === step.tags.length) {
        if (last && message.body[0] !== 0x49) return 'not idle after the reset';
        break;
      }
      if (code === BackendCode.ErrorResponse)
        return `${step.sql} failed: ${errorFields(message.body).message}`;
      return `unexpected message type ${String.fromCharCode(code)} in answer to ${step.sql}`;
    }
  }
  if (session.reader.pending > 0) return 'more output after the reset';
  return undefined;
}
