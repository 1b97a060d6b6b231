// Session pooling (pool_mode = session): upstream sessions are kept per key (server, database,
// role) and lent to one client at a time. A key's sessions are in exactly one of three places:
//   idle     — reset, reader attached, ready for the next checkout (taken LIFO: the warmest)
//   busy     — checked out; the caller drives it (statements, then lend()), or being reset
//   opening  — a login in progress (counted, so that size holds while it runs)
// A busy session taken by checkoutIdle() for a client that has not authenticated yet is also
// tentative, until its holder confirm()s it. A checkout that finds no idle session and no room
// waits in the key's FIFO queue, up to checkoutTimeoutMs, then fails with 53300; meanwhile a
// tentative session is taken back for each such waiter (oldest first): its holder is told and
// stops using it, and once the holder's statements on it have settled it is reset as a release
// is and serves the queue. A released session is reset (statements.ts) and goes back only if the
// reset proves it clean; a closed, failed, unknown or too old session is ended.
import { serialize } from '../protocol/encode.js';
import type { ProxyError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics, PoolCloseReason } from '../metrics.js';
import { poolErrors } from './pool-errors.js';
import {
  ResetFailed,
  resetAhead,
  resetRefused,
  resetSession,
  runExtended,
  type ResetAhead,
} from './statements.js';
import { bookOf, heldContext, markClean, type HeldContext, type Owner } from './backend-book.js';
import { poolKeyId, type PoolKey, type PooledSession } from '../upstream/login.js';

export interface SessionPoolOptions {
  /** Sessions per key, counting idle, busy and opening ones. */
  size: number;
  /** How long a checkout waits in the queue before failing with 53300. */
  checkoutTimeoutMs: number;
  /** An idle session unused this long is closed; 0 keeps idle sessions. */
  idleTimeoutMs: number;
  /** A session this old is closed instead of reused (never while checked out); 0: no limit. */
  maxLifetimeMs: number;
  /** How long the reset of a released session may take (default 5000). */
  resetTimeoutMs?: number;
  /** How often idle sessions are checked (default: a quarter of the shortest limit, 50 ms–10 s). */
  reapIntervalMs?: number;
  /** Opens a new session of the key (upstream/login.ts, with the key's password). */
  login: (key: PoolKey) => Promise<PooledSession>;
  /**
   * Why a session may no longer be handed out although it works, or undefined (app mode: it was
   * logged in under a verifier its role no longer has). Asked wherever a session is taken from
   * or given back to the idle list.
   */
  outdated?: (session: PooledSession) => string | undefined;
  logger: Logger;
  /** Checkouts, opened and closed sessions are counted here. */
  metrics?: Metrics;
  /**
   * A release's reset, then its last owner's context again, so that the owner's next checkout
   * needs nothing but its settings (pool/checkout.ts): the reset's message goes first in the same
   * write as the restore's (`ahead`), its answer is read first, and only a clean reset lets the
   * restore count. The session's book is already marked clean (the restore is planned for a
   * reset backend). `held`: the context as it was before the reset, when it was whole (it may be
   * put back as it is). A rejection ends the session; ResetFailed (pool/statements.ts) says the
   * reset itself did not prove the session clean.
   */
  restore?: (
    session: PooledSession,
    owner: Owner,
    held: HeldContext | undefined,
    ahead: ResetAhead,
  ) => Promise<void>;
}

export interface PoolKeyStats {
  server: string;
  database: string;
  role: string;
  idle: number;
  busy: number;
  opening: number;
  waiting: number;
  /** Busy sessions checked out before their client authenticated, not yet confirmed. */
  tentative: number;
}

export interface PoolStats {
  idle: number;
  busy: number;
  opening: number;
  waiting: number;
  tentative: number;
  /** Sessions opened since the pool started. */
  opened: number;
  /** Sessions ended since the pool started. */
  closed: number;
  /** Checkouts that failed with 53300. */
  timeouts: number;
  /** Tentative sessions taken back for a waiting checkout. */
  reclaimed: number;
  keys: PoolKeyStats[];
}

/**
 * Told by the pool that a tentative session is taken back: the holder must not start anything
 * more on it, and resolves (or rejects) once what it started there has finished.
 */
export type Reclaim = () => Promise<unknown>;

interface Waiter {
  /** The owner whose idle backend this checkout would rather have (PooledSession.owner). */
  prefer: string | undefined;
  /** When it started waiting (performance.now()). */
  since: number;
  /**
   * Transaction mode: rather wait (at most affinityWaitMs) for a backend of its own owner than
   * take another owner's idle one, while its owner holds half its share of the pool (mayPassOver).
   */
  patient: boolean;
  resolve: (session: PooledSession) => void;
  reject: (error: Error) => void;
  settled: boolean;
  timer: NodeJS.Timeout | undefined;
  cleanup: () => void;
}

/** How far down the queue a waiter of a session's own owner is looked for. */
const affinityLookahead = 256;
/** How long the oldest waiter may have waited and still be passed over (ms). */
const affinityWaitMs = 50;

interface Entry {
  id: string;
  key: PoolKey;
  idle: PooledSession[];
  busy: Set<PooledSession>;
  opening: number;
  queue: Waiter[];
  /** Waiters in the queue by the owner they prefer (waiters without a preference not counted). */
  waiting: Map<string, number>;
  /** Set while an idle session is kept for a patient waiter's own owner (armAffinity). */
  affinityTimer: NodeJS.Timeout | undefined;
  /** Busy sessions of checkoutIdle() not yet confirmed, oldest first, with their holder's hook. */
  tentative: Map<PooledSession, Reclaim>;
  /** Tentative sessions taken back for the queue whose reset has not finished. */
  reclaiming: number;
}

/**
 * What aborts a checkout, for a holder that checks out again and again (a transaction-mode
 * client, once per transaction): an AbortSignal's work without an EventTarget, one listener at a
 * time.
 */
export class CheckoutCancel {
  aborted = false;
  reason: Error | undefined;
  private listener: (() => void) | undefined;

  abort(reason?: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  /** Calls `listener` on abort; returns what stops it. */
  listen(listener: () => void): () => void {
    this.listener = listener;
    return () => {
      if (this.listener === listener) this.listener = undefined;
    };
  }
}

export class SessionPool {
  private readonly entries = new Map<string, Entry>();
  private readonly logins = new Set<Promise<unknown>>();
  private readonly ended = new WeakSet<PooledSession>();
  private readonly resetting = new WeakSet<PooledSession>();
  /** Taken back from their holder, until the pool releases them itself. */
  private readonly reclaimed = new WeakSet<PooledSession>();
  private readonly reaper: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly resetTimeoutMs: number;
  private closed = false;
  private counters = { opened: 0, closed: 0, timeouts: 0, reclaimed: 0 };

  constructor(private readonly opts: SessionPoolOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1)
      throw new RangeError(`pool size must be a positive integer, got ${opts.size}`);
    this.log = opts.logger.child({ component: 'pool' });
    this.resetTimeoutMs = opts.resetTimeoutMs ?? 5000;
    const limits = [opts.idleTimeoutMs, opts.maxLifetimeMs].filter((ms) => ms > 0);
    const interval =
      opts.reapIntervalMs ??
      (limits.length === 0 ? undefined : Math.min(10_000, Math.max(50, Math.min(...limits) / 4)));
    if (interval !== undefined) {
      this.reaper = setInterval(() => {
        this.reap();
      }, interval);
      this.reaper.unref();
    }
  }

  /**
   * A session of the key for the caller's exclusive use, until release() or discard(). Rejects
   * with the login's error, with 53300 after checkoutTimeoutMs in the queue, with 57P01 once the
   * pool is closing, or with the signal's reason if it aborts first.
   */
  checkout(
    key: PoolKey,
    signal?: AbortSignal | CheckoutCancel,
    prefer?: string,
    patient?: boolean,
  ): Promise<PooledSession> {
    if (this.closed) return Promise.reject(poolErrors.closed());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const entry = this.entry(key);
    const checkout = new Promise<PooledSession>((resolve, reject) => {
      const waiter: Waiter = {
        prefer,
        since: performance.now(),
        patient: patient === true,
        resolve,
        reject,
        settled: false,
        timer: undefined,
        cleanup: noop,
      };
      if (signal) {
        const onAbort = (): void => {
          this.unqueue(entry, waiter);
          this.settleWith(waiter, () => {
            reject(abortReason(signal));
          });
        };
        if (signal instanceof CheckoutCancel) {
          waiter.cleanup = signal.listen(onAbort);
        } else {
          signal.addEventListener('abort', onAbort, { once: true });
          waiter.cleanup = () => {
            signal.removeEventListener('abort', onAbort);
          };
        }
      }
      this.enqueue(entry, waiter);
      this.dispatch(entry);
      if (!waiter.settled && entry.queue.includes(waiter)) {
        waiter.timer = setTimeout(() => {
          this.unqueue(entry, waiter);
          this.counters.timeouts += 1;
          this.opts.metrics?.poolCheckoutTimeout();
          const error = poolErrors.exhausted(
            key.role,
            key.database,
            this.opts.size,
            this.opts.checkoutTimeoutMs,
          );
          this.log.warn(
            { event: 'pool_exhausted', role: key.role, database: key.database },
            error.message,
          );
          this.settleWith(waiter, () => {
            reject(error);
          });
        }, this.opts.checkoutTimeoutMs);
      }
    });
    return checkout;
  }

  /**
   * An idle session of the key at once, or undefined: never waits, never opens a session and
   * never goes ahead of a queued checkout. For work started before the client has authenticated
   * (pool/checkout.ts), which must not make the pool grow or make anyone wait, nor hold a session
   * an authenticated client waits for: the checkout is tentative until confirm(). If a checkout
   * would wait meanwhile, `reclaim` is called (the holder loses the session at that moment), and
   * once its promise settles the pool resets the session as release() does and hands it on; a
   * holder whose work has not settled within the reset timeout loses the session for good (ended).
   * Until it confirms, the holder gives the session back with release() or discard().
   */
  checkoutIdle(key: PoolKey, reclaim: Reclaim, prefer?: string): PooledSession | undefined {
    if (this.closed) return undefined;
    const entry = this.entries.get(poolKeyId(key));
    if (!entry || entry.queue.length > 0) return undefined;
    const session = this.takeIdle(entry, prefer);
    if (!session) return undefined;
    entry.busy.add(session);
    entry.tentative.set(session, reclaim);
    session.lastUsedAt = Date.now();
    return session;
  }

  /**
   * The holder of a tentative checkout keeps it: from now on it is an ordinary checkout, never
   * taken back. False if it is not tentative (any more): taken back, or given back, or the pool
   * closed; the caller must then not use it.
   */
  confirm(session: PooledSession): boolean {
    return this.entries.get(poolKeyId(session.key))?.tentative.delete(session) ?? false;
  }

  /**
   * Takes back a checked-out session: the pool's reader is re-attached, the session is reset
   * (ROLLBACK, DISCARD ALL) and kept only if that proves it clean and idle; otherwise, or if it is
   * closed or older than maxLifetimeMs, it is ended. The caller must have detached any client
   * first (a Loan has ended). `idle`: the backend was last seen idle, so the reset needs no
   * ROLLBACK (statements.ts; a wrong guess ends the session). Never rejects.
   */
  async release(session: PooledSession, idle = false): Promise<void> {
    const entry = this.entries.get(poolKeyId(session.key));
    if (this.closed) {
      this.end(session, 'pool closed');
      return;
    }
    if (!entry?.busy.has(session) || this.resetting.has(session) || this.reclaimed.has(session)) {
      this.log.warn(
        { event: 'pool_release_unknown', pid: session.backendPid },
        'released a session that is not checked out',
      );
      return;
    }
    entry.tentative.delete(session);
    let reason = this.unusable(session, Date.now());
    if (reason === undefined) {
      session.reader.switchTo(session.socket);
      session.socket.resume();
      this.resetting.add(session);
      const book = bookOf(session);
      const owner = book.owner;
      const held = heldContext(book);
      const restore = this.opts.restore;
      if (owner !== undefined && restore !== undefined) {
        // The reset and the restore in one write, one wait: a round trip less on the backend
        // and here for every released session.
        reason = resetRefused(session);
        if (reason === undefined) {
          markClean(session);
          reason = await restore(
            session,
            owner,
            held,
            resetAhead(session, this.resetTimeoutMs, idle),
          ).then(
            () => undefined,
            (error: unknown) =>
              error instanceof ResetFailed
                ? error.message
                : `restoring its owner's context failed: ${(error as Error).message}`,
          );
        }
      } else {
        reason = await resetSession(session, this.resetTimeoutMs, idle);
        if (reason === undefined) markClean(session);
      }
      this.resetting.delete(session);
      if (reason !== undefined)
        this.log.info(
          { event: 'pool_reset_failed', pid: session.backendPid, reason },
          'pooled session not reusable after its client left',
        );
    }
    entry.busy.delete(session);
    if (reason === undefined && !this.isClosed()) {
      session.lastUsedAt = Date.now();
      entry.idle.push(session);
    } else {
      this.end(session, reason ?? 'pool closed');
    }
    this.dispatch(entry);
  }

  /**
   * Transaction mode: a checked-out session goes back as it is, with its owner's session state
   * and context, because its client's transaction ended at ReadyForQuery idle with nothing in
   * flight (pool/transaction-link.ts). The pool's reader is re-attached; a session that is closed,
   * too old or has said anything since is ended instead. Never rejects.
   */
  checkin(session: PooledSession): void {
    const entry = this.entries.get(poolKeyId(session.key));
    if (!entry?.busy.has(session) || this.resetting.has(session) || this.reclaimed.has(session)) {
      this.log.warn(
        { event: 'pool_release_unknown', pid: session.backendPid },
        'checked in a session that is not checked out',
      );
      return;
    }
    entry.tentative.delete(session);
    entry.busy.delete(session);
    session.reader.switchTo(session.socket);
    const reason = this.closed ? 'pool closed' : this.unusable(session, Date.now());
    if (reason === undefined) {
      session.lastUsedAt = Date.now();
      entry.idle.push(session);
    } else {
      this.end(session, reason);
    }
    this.dispatch(entry);
  }

  /** Ends a checked-out session instead of returning it (its state is unknown or unwanted). */
  discard(session: PooledSession, reason = 'discarded'): void {
    // Taken back from its holder: the pool's now, whatever the former holder says.
    if (this.reclaimed.has(session)) return;
    const entry = this.entries.get(poolKeyId(session.key));
    entry?.tentative.delete(session);
    entry?.busy.delete(session);
    this.end(session, reason, 'discarded');
    if (entry) this.dispatch(entry);
  }

  /** Runs one parameterised statement on a checked-out session with no client attached. */
  runExtended(session: PooledSession, sql: string, params: string[]): Promise<void> {
    return runExtended(session, sql, params);
  }

  /** Ends every session (Terminate), fails every waiting checkout with 57P01, stops reaping. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reaper) clearInterval(this.reaper);
    const sockets: PooledSession['socket'][] = [];
    for (const entry of this.entries.values()) {
      entry.waiting.clear();
      clearTimeout(entry.affinityTimer);
      for (const waiter of entry.queue.splice(0)) {
        this.settleWith(waiter, () => {
          waiter.reject(poolErrors.closed());
        });
      }
      for (const session of [...entry.idle, ...entry.busy]) {
        sockets.push(session.socket);
        this.end(session, 'pool closed');
      }
      entry.idle = [];
      entry.busy.clear();
      entry.tentative.clear();
    }
    this.entries.clear();
    await Promise.all([...this.logins].map((login) => login.catch(noop)));
    await Promise.all(sockets.map(closed));
  }

  stats(): PoolStats {
    const keys = [...this.entries.values()].map((entry): PoolKeyStats => ({
      server: `${entry.key.target.host}:${entry.key.target.port}`,
      database: entry.key.database,
      role: entry.key.role,
      idle: entry.idle.length,
      busy: entry.busy.size,
      opening: entry.opening,
      waiting: entry.queue.length,
      tentative: entry.tentative.size,
    }));
    const sum = (field: 'idle' | 'busy' | 'opening' | 'waiting' | 'tentative'): number =>
      keys.reduce((total, key) => total + key[field], 0);
    return {
      idle: sum('idle'),
      busy: sum('busy'),
      opening: sum('opening'),
      waiting: sum('waiting'),
      tentative: sum('tentative'),
      ...this.counters,
      keys,
    };
  }

  /** A method, not the field: the pool may close while a release awaits its reset. */
  private isClosed(): boolean {
    return this.closed;
  }

  // ── internals ────────────────────────────────────────────────────────────────────────────
  private entry(key: PoolKey): Entry {
    const id = poolKeyId(key);
    let entry = this.entries.get(id);
    if (!entry) {
      entry = {
        id,
        key,
        idle: [],
        busy: new Set(),
        opening: 0,
        queue: [],
        waiting: new Map(),
        affinityTimer: undefined,
        tentative: new Map(),
        reclaiming: 0,
      };
      this.entries.set(id, entry);
    }
    return entry;
  }

  /**
   * Serves the queue in order: idle sessions first, then new ones while there is room; for
   * checkouts still waiting then, tentative sessions are taken back.
   */
  private dispatch(entry: Entry): void {
    while (entry.queue.length > 0 && !this.closed) {
      const session = this.takeIdle(entry, entry.queue[0]?.prefer);
      if (session) {
        const waiter = this.waiterFor(entry, session);
        if (waiter) {
          this.grant(entry, waiter, session);
          continue;
        }
        // The oldest waiter waits for a backend of its own owner; this one stays idle for its
        // own. With room in the pool the waiter gets a new backend instead of waiting (and
        // holding up the waiters behind it); only a full pool makes it wait, at most
        // affinityWaitMs.
        entry.idle.push(session);
        if (entry.idle.length + entry.busy.size + entry.opening < this.opts.size) {
          const head = this.removeAt(entry, 0);
          if (head) this.open(entry, head);
          continue;
        }
        this.armAffinity(entry);
        return;
      }
      if (entry.idle.length + entry.busy.size + entry.opening >= this.opts.size) break;
      const waiter = this.removeAt(entry, 0);
      if (waiter) this.open(entry, waiter);
    }
    // One per waiter not already covered by a session on its way back, oldest holder first.
    while (entry.queue.length > entry.reclaiming && !this.closed) {
      const [oldest] = entry.tentative;
      if (!oldest) return;
      void this.takeBack(entry, ...oldest);
    }
  }

  /**
   * A tentative session goes back to the pool for a waiting checkout: its holder is told at once,
   * the session is reset once the holder's statements on it have settled (as release() does),
   * and dispatch() then hands it to the queue. Never rejects.
   */
  private async takeBack(entry: Entry, session: PooledSession, reclaim: Reclaim): Promise<void> {
    entry.tentative.delete(session);
    entry.reclaiming += 1;
    this.reclaimed.add(session);
    this.counters.reclaimed += 1;
    this.log.info(
      { event: 'pool_reclaim', pid: session.backendPid, role: entry.key.role },
      'session checked out before its client authenticated taken back for a waiting checkout',
    );
    let holder: Promise<unknown>;
    try {
      holder = reclaim();
    } catch {
      holder = Promise.resolve();
    }
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      holder.then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => {
          resolve(false);
        }, this.resetTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    entry.reclaiming -= 1;
    this.reclaimed.delete(session);
    if (settled) await this.release(session);
    else this.discard(session, 'taken back, but its holder did not let go of it in time');
  }

  /**
   * Who gets `session`: the oldest waiter, unless the session holds another owner's context, a
   * waiter of that owner is among the next few, and the oldest waiter may be passed over
   * (mayPassOver); then that one, so that the session needs no owner change (a reset and a
   * switch on the backend).
   */
  private waiterFor(entry: Entry, session: PooledSession): Waiter | undefined {
    const head = entry.queue[0];
    const owner = session.owner;
    if (head && owner !== undefined && head.prefer !== owner && this.mayPassOver(entry, head)) {
      if ((entry.waiting.get(owner) ?? 0) > 0) {
        const limit = Math.min(entry.queue.length, affinityLookahead);
        for (let i = 1; i < limit; i += 1)
          if (entry.queue[i]?.prefer === owner) return this.removeAt(entry, i);
      }
      // Nobody of the session's owner waits: a patient checkout (transaction mode) waits for
      // one of its own owner's backends rather than change this one's owner.
      if (head.patient) return undefined;
    }
    return this.removeAt(entry, 0);
  }

  /** Dispatches again once the oldest waiter may no longer be passed over (affinityWaitMs). */
  private armAffinity(entry: Entry): void {
    const head = entry.queue[0];
    if (!head || entry.affinityTimer) return;
    const wait = Math.max(1, Math.ceil(head.since + affinityWaitMs - performance.now()));
    entry.affinityTimer = setTimeout(() => {
      entry.affinityTimer = undefined;
      this.dispatch(entry);
    }, wait);
    entry.affinityTimer.unref();
  }

  /**
   * Whether the oldest waiter may wait for a backend of its own owner while another owner's
   * waiter takes this one (or, for a patient waiter, while this one stays idle): only while its
   * owner holds backends (one of them comes back to it soon), at least half its share of the
   * pool, and it has waited less than affinityWaitMs. An owner's share is the pool's size times
   * its part of the demand (its waiters and the busy backends it holds), measured at that moment;
   * half of it, because that measure jumps from moment to moment (a client between two
   * transactions is in no count), and an owner change costs far more than a short wait: the
   * pool splits between owners as their demand does, a backend changes owner when the split
   * moves far, none waits on a backend that will not come, and a long transaction of its own
   * delays a waiter at most affinityWaitMs.
   */
  private mayPassOver(entry: Entry, head: Waiter): boolean {
    const owner = head.prefer;
    if (owner === undefined || performance.now() - head.since >= affinityWaitMs) return false;
    let held = 0;
    let busy = 0;
    for (const session of entry.busy) {
      if (session.owner !== owner) continue;
      held += 1;
      busy += 1;
    }
    for (const session of entry.idle) if (session.owner === owner) held += 1;
    if (held === 0) return false;
    const demand = (entry.waiting.get(owner) ?? 0) + busy;
    const share = (this.opts.size * demand) / (entry.queue.length + entry.busy.size);
    return held >= share / 2;
  }

  private enqueue(entry: Entry, waiter: Waiter): void {
    entry.queue.push(waiter);
    if (waiter.prefer !== undefined)
      entry.waiting.set(waiter.prefer, (entry.waiting.get(waiter.prefer) ?? 0) + 1);
  }

  /** Takes the waiter at `index` out of the queue. */
  private removeAt(entry: Entry, index: number): Waiter | undefined {
    const [waiter] = index === 0 ? [entry.queue.shift()] : entry.queue.splice(index, 1);
    if (waiter?.prefer !== undefined) {
      const left = (entry.waiting.get(waiter.prefer) ?? 1) - 1;
      if (left > 0) entry.waiting.set(waiter.prefer, left);
      else entry.waiting.delete(waiter.prefer);
    }
    return waiter;
  }

  /**
   * An idle session, preferring one that already holds `prefer`'s context (the most recently
   * used such), then one that holds nobody's, then the one unused longest (its owner is the
   * least likely to come back for it); without a preference the most recently used.
   */
  private takeIdle(entry: Entry, prefer?: string): PooledSession | undefined {
    const now = Date.now();
    for (;;) {
      const index = this.pick(entry.idle, prefer);
      if (index < 0) return undefined;
      const [session] = entry.idle.splice(index, 1);
      if (!session) return undefined;
      const reason = this.unusable(session, now);
      if (reason === undefined) return session;
      this.end(session, reason);
    }
  }

  private pick(idle: PooledSession[], prefer: string | undefined): number {
    if (idle.length === 0) return -1;
    if (prefer === undefined) return idle.length - 1;
    let clean = -1;
    for (let i = idle.length - 1; i >= 0; i -= 1) {
      const owner = idle[i]?.owner;
      if (owner === prefer) return i;
      if (owner === undefined && clean < 0) clean = i;
    }
    return clean >= 0 ? clean : 0;
  }

  private grant(entry: Entry, waiter: Waiter, session: PooledSession): void {
    entry.busy.add(session);
    session.lastUsedAt = Date.now();
    this.settleWith(waiter, () => {
      waiter.resolve(session);
    });
  }

  private open(entry: Entry, waiter: Waiter): void {
    // The pool had room: whatever the login takes, this checkout no longer waits for the pool.
    clearTimeout(waiter.timer);
    entry.opening += 1;
    const login = this.opts.login(entry.key).then(
      (session) => {
        entry.opening -= 1;
        this.counters.opened += 1;
        this.opts.metrics?.poolSessionOpened();
        this.log.debug(
          { event: 'pool_open', pid: session.backendPid, role: entry.key.role },
          'pooled session opened',
        );
        session.socket.once('close', () => {
          this.dropIdle(entry, session);
        });
        if (this.closed) {
          this.end(session, 'pool closed');
          this.settleWith(waiter, () => {
            waiter.reject(poolErrors.closed());
          });
          return;
        }
        if (waiter.settled) {
          // The checkout was aborted meanwhile: the fresh session is as good as an idle one.
          entry.idle.push(session);
          this.dispatch(entry);
        } else {
          this.grant(entry, waiter, session);
        }
      },
      (error: unknown) => {
        entry.opening -= 1;
        const failure = error instanceof Error ? error : new Error(String(error));
        this.log.warn(
          {
            event: 'pool_login_failed',
            role: entry.key.role,
            database: entry.key.database,
            code: (failure as Partial<ProxyError>).code,
          },
          (failure as Partial<ProxyError>).logMessage ?? failure.message,
        );
        this.settleWith(waiter, () => {
          waiter.reject(failure);
        });
        this.dispatch(entry);
      },
    );
    this.logins.add(login);
    void login.finally(() => this.logins.delete(login));
  }

  /** Why a session must not be handed out again, or undefined. */
  private unusable(session: PooledSession, now: number): string | undefined {
    if (session.broken || session.socket.destroyed || session.socket.readableEnded)
      return 'connection closed';
    if (this.opts.maxLifetimeMs > 0 && now - session.createdAt >= this.opts.maxLifetimeMs)
      return 'max lifetime reached';
    const outdated = this.opts.outdated?.(session);
    if (outdated !== undefined) return outdated;
    // An idle backend says nothing unless it is going away (57P01 and the like) or something
    // changed under it; either way it is not the session that was reset.
    if (session.reader.pending > 0) return 'unsolicited message while idle';
    return undefined;
  }

  /** Settles a checkout once (its timer and abort listener gone), its wait counted either way. */
  private settleWith(waiter: Waiter, settle: () => void): void {
    if (waiter.settled) return;
    waiter.settled = true;
    clearTimeout(waiter.timer);
    waiter.cleanup();
    this.opts.metrics?.poolCheckout((performance.now() - waiter.since) / 1000);
    settle();
  }

  private unqueue(entry: Entry, waiter: Waiter): void {
    const index = entry.queue.indexOf(waiter);
    if (index >= 0) this.removeAt(entry, index);
  }

  private dropIdle(entry: Entry, session: PooledSession): void {
    const index = entry.idle.indexOf(session);
    if (index < 0) return;
    entry.idle.splice(index, 1);
    this.end(session, 'connection closed while idle');
  }

  private reap(): void {
    const now = Date.now();
    for (const entry of this.entries.values()) {
      const keep: PooledSession[] = [];
      for (const session of entry.idle) {
        const reason =
          this.unusable(session, now) ??
          (this.opts.idleTimeoutMs > 0 && now - session.lastUsedAt >= this.opts.idleTimeoutMs
            ? 'idle timeout'
            : undefined);
        if (reason === undefined) keep.push(session);
        else this.end(session, reason);
      }
      entry.idle = keep;
      if (
        keep.length === 0 &&
        entry.busy.size === 0 &&
        entry.opening === 0 &&
        entry.queue.length === 0
      )
        this.entries.delete(entry.id);
    }
  }

  /** Closes a session that left the pool's books: Terminate, then the socket. */
  private end(session: PooledSession, reason: string, kind = closeKind(reason)): void {
    if (this.ended.has(session)) return;
    this.ended.add(session);
    this.counters.closed += 1;
    this.opts.metrics?.poolSessionClosed(kind);
    this.log.debug(
      { event: 'pool_close', pid: session.backendPid, reason },
      'pooled session closed',
    );
    session.broken = true;
    const socket = session.socket;
    if (socket.destroyed) return;
    if (socket.writable) socket.end(serialize.end());
    socket.destroySoon();
    // A peer that reads nothing would keep 'finish' from coming; do not wait for it forever.
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}

/**
 * A closed session's reason as a metric label: the pool's own reasons by name; anything else
 * handed to end() is what a failed reset said (statements.ts), discard() says `discarded`.
 */
function closeKind(reason: string): PoolCloseReason {
  switch (reason) {
    case 'pool closed':
      return 'shutdown';
    case 'idle timeout':
      return 'idle';
    case 'max lifetime reached':
      return 'lifetime';
    case 'connection closed':
    case 'connection closed while idle':
    case 'unsolicited message while idle':
      return 'broken';
    default:
      return 'reset_failed';
  }
}

function abortReason(signal: AbortSignal | CheckoutCancel): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('checkout aborted');
}

function closed(socket: PooledSession['socket']): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    socket.once('close', () => {
      resolve();
    });
  });
}

function noop(): void {
  // nothing to do
}
