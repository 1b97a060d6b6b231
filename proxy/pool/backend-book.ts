// What the proxy knows about one pooled backend's session state, beyond the PooledSession
// itself: whose context it holds and whether that context is still in place, the settings the
// proxy set on it, the named statements it holds (transaction mode), which client's unnamed
// statement it holds, and how many cancels are on their way to it. Kept beside the session (a
// WeakMap) so that the pool's login does not need to know about it; markClean() is what a
// DISCARD ALL makes true.
import type { PooledSession } from '../upstream/login.js';

/** Whose context a backend carries: the claims of a switch grant (pool/grant.ts). */
export interface Owner {
  /** org, tenant, user and values as one string: equal strings, same owner. */
  readonly key: string;
  readonly org: string | null;
  readonly tenant: string | null;
  readonly user: string | null;
  readonly values: Record<string, string>;
}

export function ownerOf(
  org: string | null,
  tenant: string | null,
  user: string | null,
  values: Record<string, string> = {},
): Owner {
  const sorted = Object.fromEntries(Object.entries(values).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { key: JSON.stringify([org, tenant, user, sorted]), org, tenant, user, values: sorted };
}

export interface BackendBook {
  /** The owner whose context was last switched in (session.owner is its key). */
  owner: Owner | undefined;
  /**
   * False once something the proxy saw may have emptied the context (a client's RESET ALL or
   * DISCARD ALL): the same owner then needs the switch again, not a reset.
   */
  contextValid: boolean;
  /** Settings the proxy set with set_config since the last reset, by name. */
  applied: Map<string, string>;
  /**
   * The settings the last client readied for it wanted: a session-mode release restores them
   * with the owner's context, so that the same kind of client next time needs no statement.
   */
  lastWanted: Map<string, string>;
  /**
   * The key (wantedKey in pool/switch.ts) of the settings the last readying left the backend
   * with, as long as nothing seen since may have changed them (a ParameterStatus, RESET, DISCARD
   * ALL, a reset): a readying for the same owner and equal settings then needs no look at them.
   */
  readyKey: string | undefined;
  /** Server-side names of the statements prepared on it, least recently used first. */
  prepared: Map<string, true>;
  /** The client whose unnamed statement the backend holds, if any. */
  unnamedOf: object | undefined;
  /** Cancels sent to it and not finished: it is not handed to another client meanwhile. */
  canceling: number;
  /**
   * A client was attached since the last reset: its session state may be anywhere. False after
   * a reset (and for a fresh backend): then only the proxy's own settings and context are on it.
   */
  used: boolean;
  /** When the context was switched in (Date.now()) and under which context epoch. */
  switchedAt: number;
  epoch: number;
  /**
   * The token the last switch left in the backend's record ('s1.<instance>.<seq>.<mac>', as
   * switch_context writes it): pgvpd.set_context(token) puts that context back after a RESET ALL
   * without a new grant, as long as the record is still the backend's.
   */
  token: string | undefined;
}

/** A backend's context as it was before a reset: what a session-mode release puts back. */
export interface HeldContext {
  readonly owner: Owner;
  readonly token: string;
  readonly switchedAt: number;
  readonly epoch: number;
}

/**
 * Bumped whenever what a context was computed from may have changed (a catalog change: a user
 * removed, an org suspended, a resolver added): every backend's context is switched in again at
 * its next checkout, where switch_context checks the role and org again and reruns the resolvers.
 */
let contextEpoch = 0;

export function invalidateContexts(): void {
  contextEpoch += 1;
}

/**
 * Whether the backend's context may be used as it is: in place, switched in under the current
 * epoch, and younger than `maxAgeMs` (0: no limit), so that resolver values that depend on data
 * are at most that old.
 */
export function contextCurrent(book: BackendBook, maxAgeMs: number, now = Date.now()): boolean {
  return book.contextValid && fresh(book, maxAgeMs, now);
}

/** Switched in under the current epoch and younger than `maxAgeMs` (0: no limit). */
function fresh(
  context: Pick<BackendBook, 'epoch' | 'switchedAt'>,
  maxAgeMs: number,
  now: number,
): boolean {
  return context.epoch === contextEpoch && (maxAgeMs <= 0 || now - context.switchedAt < maxAgeMs);
}

/** Records a switch that just succeeded; `token` is what switch_context wrote in the record. */
export function switchedIn(book: BackendBook, owner: Owner, token: string): void {
  book.owner = owner;
  book.contextValid = true;
  book.switchedAt = Date.now();
  book.epoch = contextEpoch;
  book.token = token;
}

/** The context the backend holds, to be put back after a reset; undefined when none is whole. */
export function heldContext(book: BackendBook): HeldContext | undefined {
  if (!book.contextValid || !book.owner || book.token === undefined) return undefined;
  return { owner: book.owner, token: book.token, switchedAt: book.switchedAt, epoch: book.epoch };
}

/** Whether `held` may be put back as it is: same epoch, not older than `maxAgeMs`. */
export function heldCurrent(held: HeldContext, maxAgeMs: number, now = Date.now()): boolean {
  return fresh(held, maxAgeMs, now);
}

/** Records a held context put back with pgvpd.set_context: the same context, the same age. */
export function restoredIn(book: BackendBook, held: HeldContext): void {
  book.owner = held.owner;
  book.contextValid = true;
  book.switchedAt = held.switchedAt;
  book.epoch = held.epoch;
  book.token = held.token;
}

const books = new WeakMap<PooledSession, BackendBook>();

export function bookOf(session: PooledSession): BackendBook {
  let book = books.get(session);
  if (!book) {
    book = {
      owner: undefined,
      contextValid: false,
      applied: new Map(),
      lastWanted: new Map(),
      readyKey: undefined,
      prepared: new Map(),
      unnamedOf: undefined,
      canceling: 0,
      used: false,
      switchedAt: 0,
      epoch: -1,
      token: undefined,
    };
    books.set(session, book);
  }
  return book;
}

/** After DISCARD ALL: no context, no settings of the proxy's, no statements, no owner. */
export function markClean(session: PooledSession): void {
  const book = bookOf(session);
  session.owner = undefined;
  book.owner = undefined;
  book.contextValid = false;
  book.applied.clear();
  book.readyKey = undefined;
  book.prepared.clear();
  book.unnamedOf = undefined;
  book.used = false;
  book.token = undefined;
}
