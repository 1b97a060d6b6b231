// A pooled client's checkout (org mode, and app mode with pool_mode): which pooled backend it
// gets, and what is set on it before the client may use it. A session of the pool key (org mode:
// the user's connect_as role on the org's server and database; app mode: the username's role on
// the client's database) is checked out (one that holds this owner's context already, if idle)
// and readied in one statement (pool/switch.ts: the owner's context through a switch grant, the
// client's startup parameters; nothing for a backend that has both). While the client derives its SCRAM key, an
// idle session may be readied early with the context only (tentative, see readyEarly); the
// client's parameters wait for authentication.
// Whatever the checkout holds when the session closes before its loan goes back: a session of
// a failed handshake is discarded (its state is unknown), one readied early is handed back to be
// reset, a waiting checkout is aborted.
import type { PoolKey, PooledSession } from '../upstream/login.js';
import type { UpstreamTarget } from '../upstream/connect.js';
import { bookOf, type HeldContext, type Owner } from './backend-book.js';
import { readyFor, type SwitchTarget } from './switch.js';
import type { ResetAhead } from './statements.js';
import type { PoolParts, Runtime } from '../runtime.js';
import type { Session } from '../session/lifecycle.js';
import type { Metrics } from '../metrics.js';

export class Checkout {
  /** The client's pooled session, from checkout (or claim) until the loan takes it. */
  private session: PooledSession | undefined;
  /**
   * A session readied before authentication (readyEarly) and its preparation, until the client
   * claims it, gives it back, or the pool takes it back for a waiting checkout.
   */
  private tentative: { session: PooledSession; ready: Promise<PooledSession> } | undefined;
  private abort: AbortController | undefined;

  constructor(
    private readonly client: Session,
    private readonly runtime: Runtime,
    private readonly org: PoolParts,
  ) {
    client.hold(() => {
      this.abort?.abort();
      const session = this.session;
      this.session = undefined;
      // A session checked out for a handshake that failed before the loan: its state is unknown.
      if (session) org.pool.discard(session, 'handshake failed');
      // One readied before authentication is not the client's yet: it goes back to be reset.
      if (this.tentative) void this.giveBack(this.tentative.ready);
    });
  }

  /** Aborts a waiting checkout or held answer when the client goes. */
  signal(): AbortSignal {
    this.abort ??= new AbortController();
    if (this.client.isClosed()) this.abort.abort();
    return this.abort.signal;
  }

  /** Whether a session's server is the proxy's configured upstream (the `default` server). */
  onDefaultUpstream(session: PooledSession): boolean {
    return session.key.target === this.runtime.upstream;
  }

  /**
   * Before authentication: an idle session of the key, if there is one at once (this never
   * makes the pool grow or anyone wait), with the context issued and set, which depend only on
   * the org and the username; nothing of the client's own (startup parameters) reaches it before
   * the client has authenticated. Undefined when none is idle. The checkout is tentative:
   * claim() makes it the client's after authentication, giveBack() returns it, and the pool
   * takes it back for a checkout that would otherwise wait.
   */
  readyEarly(key: PoolKey, owner: Owner): Promise<PooledSession> | undefined {
    const session = this.org.pool.checkoutIdle(
      key,
      () => {
        // An authenticated client is waiting for the pool: the session is the pool's again, from
        // now on; the pool resets it once the statement under way on it (if any) has finished.
        const tentative = this.tentative;
        if (!tentative || tentative.session !== session) return Promise.resolve();
        this.tentative = undefined;
        return tentative.ready;
      },
      owner.key,
    );
    if (!session) return undefined;
    // Started once `this.tentative` is set below: until then the session would look abandoned.
    const ready = Promise.resolve()
      .then(() =>
        this.prepare(session, owner, undefined, () => this.tentative?.session !== session),
      )
      .then(() => session);
    ready.catch(() => undefined);
    this.tentative = { session, ready };
    return ready;
  }

  /**
   * Not authenticated (refused, left, timed out): a session readied early goes back to the pool,
   * to be reset like a released one once its statement under way has finished; nothing more is
   * started on it. Not discarded: an unauthenticated client cannot make the pool throw sessions
   * away. Nothing to do if the pool has taken it back already.
   */
  async giveBack(early: Promise<PooledSession>): Promise<void> {
    const tentative = this.tentative;
    if (tentative?.ready !== early) return;
    this.tentative = undefined;
    // No longer the pool's to take back: this release is the only one.
    if (!this.org.pool.confirm(tentative.session)) return;
    await early.catch(() => undefined);
    void this.org.pool.release(tentative.session);
  }

  /**
   * Authenticated: the client's session, with its context and its startup parameters. The one
   * readied early if the pool has not taken it back meanwhile, else a checkout (which may wait,
   * up to pool_checkout_timeout). Undefined if the client left while it waited.
   */
  async take(
    key: PoolKey,
    owner: Owner,
    parameters: Map<string, string>,
    early?: Promise<PooledSession>,
  ): Promise<PooledSession | undefined> {
    const claimed = early ? await this.claim(early) : undefined;
    if (claimed) {
      // Readied early with the context only: the client's parameters, now it has authenticated.
      await this.applyParameters(claimed, owner, parameters);
      return claimed;
    }
    // An idle backend holding this owner's context needs no switch (pool/session-pool.ts pick).
    const session = await this.org.pool.checkout(key, this.signal(), owner.key);
    if (this.client.isClosed()) {
      await this.org.pool.release(session);
      return undefined;
    }
    this.session = session;
    await this.prepare(session, owner, parameters);
    return session;
  }

  /** The loan takes the session: nothing is undone for it any more. */
  handOver(): void {
    this.session = undefined;
  }

  /**
   * The session readied early becomes the client's, unless the pool has taken it back meanwhile
   * (undefined: the client checks out as usual).
   */
  private async claim(early: Promise<PooledSession>): Promise<PooledSession | undefined> {
    try {
      await early;
    } catch (error) {
      // Still this client's: its failure is the client's (the close gives the session back).
      if (this.tentative?.ready === early) throw error;
    }
    const tentative = this.tentative;
    if (tentative?.ready !== early) return undefined;
    this.tentative = undefined;
    if (!this.org.pool.confirm(tentative.session)) return undefined;
    this.session = tentative.session;
    return tentative.session;
  }

  /** Where a session's switch grants come from, and how long readying it may take. */
  switchTarget(session: PooledSession): SwitchTarget {
    const target = session.key.target;
    return {
      keys: this.org.instanceKeys,
      server: this.onDefaultUpstream(session)
        ? undefined
        : { host: target.host, port: target.port },
      timeoutMs: resetTimeoutMs,
      contextMaxAgeMs: this.runtime.config.context_max_age * 1000,
      metrics: this.runtime.metrics,
    };
  }

  /**
   * The org user's context (one statement on the backend, no control round trip, nothing at
   * all if the backend holds it already) and the client's startup parameters unless
   * `parameters` is undefined (a session readied before authentication: applyParameters()
   * after it). Once `abandoned()` says the session is no longer the client's, nothing is
   * written to it.
   */
  private async prepare(
    session: PooledSession,
    owner: Owner,
    parameters: Map<string, string> | undefined,
    abandoned: () => boolean = () => false,
  ): Promise<void> {
    if (abandoned()) return;
    await readyFor(
      session,
      owner,
      parameters ?? new Map<string, string>(),
      this.switchTarget(session),
    );
  }

  /**
   * The client's startup parameters on a session readied before authentication, which has its
   * context already: one statement, only if any differ from what the session has. Set after
   * the context, they touch it no more than the client's own SET could (a `pgvpd.*` one is
   * never applied); their ParameterStatus is kept in `session.parameters` for the end of the
   * handshake.
   */
  private async applyParameters(
    session: PooledSession,
    owner: Owner,
    parameters: Map<string, string>,
  ): Promise<void> {
    await readyFor(session, owner, parameters, this.switchTarget(session));
  }
}

/** How long readying a pooled session may take before it is given up (and ended). */
const resetTimeoutMs = 5000;

/**
 * The pool's restore step (SessionPool's `restore`): with the reset of a released session (sent
 * ahead of it in the same write, answered first), its last owner's context goes back on it, with
 * the settings its last client wanted, so that the owner's next checkout by the same kind of
 * client (same startup parameters) costs no statement. A context that was whole before the reset
 * and is still current goes back with pgvpd.set_context (its record is unchanged: no grant, no
 * checks to redo); otherwise a switch.
 */
export function restoreOwner(
  org: Pick<PoolParts, 'instanceKeys'>,
  upstream: UpstreamTarget,
  contextMaxAgeMs: number,
  metrics?: Metrics,
): (
  session: PooledSession,
  owner: Owner,
  held: HeldContext | undefined,
  ahead: ResetAhead,
) => Promise<void> {
  return async (session, owner, held, ahead) => {
    const target = session.key.target;
    await readyFor(
      session,
      owner,
      bookOf(session).lastWanted,
      {
        keys: org.instanceKeys,
        server: target === upstream ? undefined : { host: target.host, port: target.port },
        timeoutMs: resetTimeoutMs,
        contextMaxAgeMs,
        metrics,
      },
      held,
      ahead,
    );
  };
}
