// Readying a pooled backend for a client: its owner's context and the client's settings, in one
// write and one wait, with no round trip to a control connection. What is sent depends on what
// the backend already holds (pool/backend-book.ts):
//   same owner, context in place   → only the settings that differ, or nothing at all
//   same owner, context emptied    → settings + switch
//   no owner (fresh, or reset)     → settings + switch
//   another owner                  → reset (session state of the old owner) + settings + switch
//   its own context put back       → settings + pgvpd.set_context(token), after a session-mode
//                                    release's reset emptied a context still current (no grant:
//                                    the backend's record is the same, only RESET ALL cleared it)
// The reset is DISCARD ALL less DISCARD PLANS, statements included (see ownerReset). The switch is pgvpd.switch_context with a grant minted here under the proxy's instance
// key (pool/grant.ts): the backend verifies it and sets the context itself. Every answer is
// read up to its ReadyForQuery; an error, a notification, anything unexpected or a status other
// than idle makes the backend unusable (`broken`) and the client's checkout fails before any of
// its bytes reached the backend.
import { serialize } from '../protocol/encode.js';
import { proxyErrors } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import {
  bufferedUpstreamMessage,
  commandTag,
  errorFields,
  parameterStatus,
  upstreamMessage,
  type ErrorFields,
} from '../protocol/decode.js';
import type { InstanceKeys } from '../upstream/instance-keys.js';
import type { PooledSession } from '../upstream/login.js';
import {
  bookOf,
  contextCurrent,
  heldCurrent,
  markClean,
  restoredIn,
  switchedIn,
  type HeldContext,
  type Owner,
} from './backend-book.js';
import { grantParams, mintGrant, switchCall } from './grant.js';
import { poolErrors } from './pool-errors.js';
import { ResetFailed, stateReset, type ResetAhead } from './statements.js';
import { readyingKind, type Metrics } from '../metrics.js';

/**
 * Session state a new owner must not inherit: all of it, statements included (pool/statements.ts
 * stateReset: DISCARD ALL less DISCARD PLANS). Statements too: pg_prepared_statements would show
 * the old owner's statement texts to the new one, and a PREPARE run inside a DO block or a function
 * leaves no PREPARE tag to notice it by.
 */
export const ownerReset = stateReset.sql;

/**
 * Startup parameters that are not settings, or that the proxy decides itself. `role` and
 * `session_authorization` too: RESET ALL leaves them in place (GUC_NO_RESET_ALL), so one set on
 * a pooled backend for one client would outlive the light reset of an owner change and make the
 * next owner run as that role; a client that wants another role says SET ROLE, which the owner
 * reset (DISCARD ALL's SET SESSION AUTHORIZATION DEFAULT) undoes.
 */
const notSettings = new Set([
  'user',
  'database',
  'options',
  'replication',
  'role',
  'session_authorization',
]);

/**
 * The first of a client's startup parameters that a pooled session refuses (`role`,
 * `session_authorization`, in any case), or undefined. The flows refuse it with 0A000 before the
 * checkout: silently leaving it out would run the client as a role it did not ask for.
 */
export function refusedStartupParameter(parameters: Map<string, string>): string | undefined {
  for (const name of parameters.keys()) {
    const lower = name.toLowerCase();
    if (lower === 'role' || lower === 'session_authorization') return name;
  }
  return undefined;
}

/**
 * Whether the client may have a setting applied for it (`pgvpd.*` never). Setting names are
 * case-insensitive in PostgreSQL (`Role` is `role`): the check is made on the lowercase name.
 */
export function isClientSetting(name: string): boolean {
  const lower = name.toLowerCase();
  return !notSettings.has(lower) && !lower.startsWith('pgvpd.');
}

export interface SwitchTarget {
  keys: InstanceKeys;
  /** The backend's server when it is not the proxy's configured upstream. */
  server: { host: string; port: number } | undefined;
  /** Bound on the whole exchange; the backend is unusable after it. */
  timeoutMs: number;
  /** A context older than this is switched in again (context_max_age); 0 or absent: no limit. */
  contextMaxAgeMs?: number;
  /** Where a readying that succeeded is timed and counted (pgvpd_pool_readying_seconds). */
  metrics?: Metrics;
}

export interface ReadyResult {
  /** Statements sent (0: the backend was ready as it was). */
  statements: number;
  /** Whether the owner changed (a reset ran). */
  ownerChanged: boolean;
  /** Whether a switch grant was set. */
  switched: boolean;
  /** Whether a held context was put back (pgvpd.set_context) instead. */
  restored: boolean;
}

/**
 * Makes `session` hold `owner`'s context and the `wanted` settings (startup parameters and
 * reported settings the client has), sending only what differs. `held`: the context the backend
 * held before a reset emptied it; when it is `owner`'s and still current, it is put back with
 * pgvpd.set_context instead of a new switch. Rejects (and marks the session broken) if anything
 * goes wrong; the caller then discards it.
 */
export async function readyFor(
  session: PooledSession,
  owner: Owner,
  wanted: Map<string, string>,
  target: SwitchTarget,
  held?: HeldContext,
  ahead?: ResetAhead,
): Promise<ReadyResult> {
  if (held === undefined && ahead === undefined) {
    const ready = readyAsItIs(session, owner, wanted, target);
    if (ready) return ready;
  }
  const book = bookOf(session);
  const key = wantedKey(wanted);
  const started = performance.now();
  const result = await readyOnce(session, owner, wanted, target, held, ahead);
  book.readyKey = key;
  target.metrics?.poolReadied(readyingKind(result), (performance.now() - started) / 1000);
  return result;
}

/**
 * readyFor() without waiting, when nothing needs sending: the same owner's next transaction with
 * the same settings, nothing changed on the backend since it was last readied (no comparison of
 * settings either). Undefined otherwise: readyFor() then.
 */
export function readyAsItIs(
  session: PooledSession,
  owner: Owner,
  wanted: Map<string, string>,
  target: SwitchTarget,
): ReadyResult | undefined {
  const book = bookOf(session);
  if (
    session.owner !== owner.key ||
    book.readyKey !== wantedKey(wanted) ||
    !contextCurrent(book, target.contextMaxAgeMs ?? 0)
  )
    return undefined;
  book.lastWanted = wanted;
  target.metrics?.poolReadied('none', 0);
  return nothingSent;
}

const nothingSent: ReadyResult = Object.freeze({
  statements: 0,
  ownerChanged: false,
  switched: false,
  restored: false,
});

const wantedKeys = new WeakMap<Map<string, string>, string>();

/**
 * Equal settings, equal keys: the entries that may be applied, in order, as one string (kept per
 * map: a transaction-mode client hands the same map until its settings change).
 */
function wantedKey(wanted: Map<string, string>): string {
  let key = wantedKeys.get(wanted);
  if (key === undefined) {
    const entries: string[] = [];
    for (const [name, value] of wanted) if (isClientSetting(name)) entries.push(name, value);
    key = JSON.stringify(entries);
    wantedKeys.set(wanted, key);
  }
  return key;
}

async function readyOnce(
  session: PooledSession,
  owner: Owner,
  wanted: Map<string, string>,
  target: SwitchTarget,
  held: HeldContext | undefined,
  ahead: ResetAhead | undefined,
): Promise<ReadyResult> {
  const book = bookOf(session);
  book.lastWanted = wanted;
  const ownerChanged = session.owner !== undefined && session.owner !== owner.key;
  // The same owner's earlier client had a startup parameter this one does not: set_config
  // cannot take it back, RESET ALL can (and empties the context, so the switch follows).
  let stale = false;
  if (!ownerChanged) for (const name of book.applied.keys()) if (!wanted.has(name)) stale = true;
  const needSwitch =
    ownerChanged ||
    stale ||
    session.owner === undefined ||
    !contextCurrent(book, target.contextMaxAgeMs ?? 0);
  // A backend no client has used since its reset holds only the proxy's own settings and the
  // last owner's context, which the switch replaces: RESET ALL for the settings is enough.
  const fullReset = ownerChanged && book.used;
  const resetSql = fullReset
    ? ownerReset
    : stale || (ownerChanged && book.applied.size > 0)
      ? 'RESET ALL'
      : undefined;
  const parts: Buffer[] = [];
  let readies = 0;
  // Exactly what the backend must answer, in order (Z: a ReadyForQuery), so that nothing else
  // (a previous client's answers still on their way) is taken for the readying's.
  const expect: string[] = [];
  if (resetSql !== undefined) {
    parts.push(serialize.query(resetSql));
    readies += 1;
    if (resetSql === ownerReset)
      for (const tag of stateReset.tags)
        expect.push(...(tag === 'SELECT 1' ? ['T', 'D'] : []), `C${tag}`);
    else expect.push('CRESET');
    expect.push('Z');
  }
  // After a reset every setting is back at its login value: all of the client's are applied.
  const fresh = resetSql !== undefined;
  const applied = fresh ? new Map<string, string>() : book.applied;
  const values: string[] = [];
  const calls: string[] = [];
  for (const [name, value] of wanted) {
    if (!isClientSetting(name)) continue;
    const current = applied.get(name) ?? (fresh ? undefined : session.parameters.get(name));
    if (current === value) continue;
    values.push(name, value);
    calls.push(
      `pg_catalog.set_config($${String(values.length - 1)}, $${String(values.length)}, false)`,
    );
  }
  let instance: string | undefined;
  let token: string | undefined;
  // A reset emptied nothing but the settings the context is in: the record it names is the
  // backend's still, so the same context is put back without a grant (set_context checks that
  // the record is this backend's and its token this one; it refuses otherwise).
  const restore =
    needSwitch &&
    !ownerChanged &&
    held !== undefined &&
    held.owner.key === owner.key &&
    heldCurrent(held, target.contextMaxAgeMs ?? 0);
  if (restore) {
    calls.push(`pgvpd.set_context($${String(values.length + 1)})`);
    values.push(held.token);
  } else if (needSwitch) {
    const key = await target.keys.keyFor(session.key.database, target.server);
    const grant = mintGrant(key, session, owner);
    instance = grant.instance;
    token = `s1.${grant.instance}.${String(session.switchSeq)}.${grant.mac}`;
    calls.push(switchCall(values.length + 1));
    values.push(...grantParams(grant));
  }
  if (calls.length > 0) {
    // A session that defaults to read-only transactions (the client's own setting, kept for the
    // same owner) would refuse the switch's record with 25006: the statement then runs in an
    // explicit read-write transaction. Reported since PostgreSQL 14, so the proxy knows it.
    const readOnly =
      needSwitch &&
      !restore &&
      !fresh &&
      session.parameters.get('default_transaction_read_only') === 'on';
    if (readOnly) {
      parts.push(serialize.query('BEGIN READ WRITE'));
      expect.push('CBEGIN', 'Z');
    }
    expect.push('1', '2', 'D', 'CSELECT 1', 'Z');
    parts.push(
      serialize.parse({ text: `select ${calls.join(', ')}` }),
      serialize.bind({ values }),
      serialize.execute(),
      serialize.sync(),
    );
    if (readOnly) {
      parts.push(serialize.query('COMMIT'));
      expect.push('CCOMMIT', 'Z');
    }
    readies += readOnly ? 3 : 1;
  }
  if (readies === 0 && ahead === undefined)
    return { statements: 0, ownerChanged: false, switched: false, restored: false };
  if (session.broken || session.socket.destroyed)
    throw poolErrors.sessionBroken(session.backendPid, 'connection closed');
  if (ahead !== undefined) parts.unshift(ahead.message);
  session.socket.write(Buffer.concat(parts));
  try {
    // A reset sent ahead is answered first; if it did not prove the session clean, what follows
    // it does not matter: the session is ended.
    const reason = await ahead?.answered();
    if (reason !== undefined) throw new ResetFailed(reason);
    await answered(session, expect, target.timeoutMs);
  } catch (error) {
    session.broken = true;
    session.owner = undefined;
    book.owner = undefined;
    book.contextValid = false;
    const message = (error as Error).message;
    // The database no longer honours the key: the next switch registers the proxy again. A
    // refused restore names the instance of its token (migration 000016).
    const named = instance ?? (restore ? held.token.split('.')[1] : undefined);
    if (named !== undefined && /proxy instance \d+ is retired/.test(message))
      target.keys.forget(session.key.database, target.server, named);
    // A refused switch or a failing resolver is the proxy's business, not the client's: the
    // client is told its context could not be set, the log says why (as issue_context did).
    if (needSwitch && message.startsWith('pgvpd:')) {
      const code = (error as { code?: unknown }).code;
      throw proxyErrors.contextFailed(
        typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined,
        `${restore ? 'set_context' : 'switch_context'}: ${message}`,
      );
    }
    throw error;
  }
  if (fullReset) markClean(session);
  if (fresh) book.applied.clear();
  if (ownerChanged) book.unnamedOf = undefined;
  const settingValues = values.length - (restore ? 1 : needSwitch ? 3 : 0);
  for (let i = 0; i < settingValues; i += 2) book.applied.set(values[i] ?? '', values[i + 1] ?? '');
  if (calls.length > 0) book.unnamedOf = undefined;
  if (restore) {
    session.owner = owner.key;
    restoredIn(book, held);
  } else if (needSwitch) {
    session.owner = owner.key;
    switchedIn(book, owner, token ?? '');
  }
  return {
    statements: readies,
    ownerChanged,
    switched: needSwitch && !restore,
    restored: restore,
  };
}

/** Reads the answers `expect` names, in order; throws the first error or oddity. */
async function answered(
  session: PooledSession,
  expect: string[],
  timeoutMs: number,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      session.socket.destroy();
      reject(poolErrors.sessionBroken(session.backendPid, `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    await Promise.race([readAll(session, expect), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function readAll(session: PooledSession, expect: string[]): Promise<void> {
  let failure: ErrorFields | undefined;
  let left = expect.filter((entry) => entry === 'Z').length;
  let at = 0;
  while (left > 0) {
    const message =
      bufferedUpstreamMessage(session.reader, 'readying a pooled session') ??
      (await upstreamMessage(session.reader, 'readying a pooled session'));
    const code = message.code;
    if (code === BackendCode.NoticeResponse) continue;
    if (code === BackendCode.ParameterStatus) {
      const [name, value] = parameterStatus(message.body);
      session.parameters.set(name, value);
      continue;
    }
    if (code === BackendCode.ErrorResponse) {
      // The rest of the failed statement is skipped: from here on only ReadyForQuery counts.
      failure ??= errorFields(message.body);
      continue;
    }
    if (code === BackendCode.ReadyForQuery) {
      left -= 1;
      if (!failure && expect[at] !== 'Z')
        throw poolErrors.sessionBroken(
          session.backendPid,
          'an answer missing before ReadyForQuery',
        );
      at = failure ? at : at + 1;
      if (left === 0 && !failure && message.body[0] !== 0x49)
        throw poolErrors.sessionBroken(session.backendPid, 'not idle after readying');
      continue;
    }
    if (failure) continue;
    const seen =
      code === BackendCode.CommandComplete
        ? `C${commandTag(message.body)}`
        : String.fromCharCode(code);
    if (seen !== expect[at])
      // Someone else's answer (a client's, still on its way), a notification, COPY: the state
      // of the backend is not what was readied.
      throw proxyErrors.upstreamProtocol(
        `${JSON.stringify(seen)} where ${JSON.stringify(expect[at] ?? 'nothing')} was due in answer to readying a pooled session`,
      );
    at += 1;
  }
  if (failure) throw poolErrors.statementFailed(failure);
  if (session.reader.pending > 0)
    throw poolErrors.sessionBroken(session.backendPid, 'more output after readying');
}
