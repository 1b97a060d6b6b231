// One client connection in org mode, as a state machine:
//   startup → route → auth → context → pipe → closed
// route: the database name names the org (catalog snapshot; unknown → 3D000, suspended → 28000).
// auth: the proxy itself runs SCRAM-SHA-256 against the org user's stored verifier; an unknown
// user gets a mock exchange (salt from the catalog's shared mock secret, the org and the name), so
// unknown user and wrong password both end in the same 28P01, sent before any clean-up so that
// both take the same time; repeated failures hold back the answer, right or wrong, per (address,
// user), per user and per address, one answer at a time per address (auth-throttle.ts), and an
// address may have only max_unauthenticated_per_address connections not yet authenticated (FATAL
// 53300 at accept beyond it). context: a pooled upstream session of the
// user's connect_as role on the org's server and database is checked out, gets a fresh signed
// context (org id, username) and the client's startup parameters, then is lent to the client;
// when the client leaves it goes back to the pool (ROLLBACK, DISCARD ALL).
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { AuthThrottle, HeldAnswer, UnauthenticatedConnections } from '../auth/throttle.js';
import type { CancelKeys } from '../edge/cancel-keys.js';
import type { Catalog, CatalogOrg, CatalogUser } from './catalog.js';
import { ClientEdge, ClientLeft } from '../edge/client-edge.js';
import type { ProxyConfig } from '../config.js';
import type { ControlPools } from '../upstream/control.js';
import { ProxyError, proxyErrors } from '../errors.js';
import type { Logger } from '../logger.js';
import { lend, type Loan } from '../pool/lend.js';
import type { SessionPool } from '../pool/session-pool.js';
import type { PoolKey, PooledSession } from '../upstream/login.js';
import { ProtocolViolation } from '../protocol/reader.js';
import * as send from '../protocol/encode.js';
import {
  ScramServer,
  orgMockSecret,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  scramMechanism,
} from '../auth/scram-server.js';
import type { Phase } from '../app/flow.js';
import { sendCancel, type UpstreamTarget } from '../upstream/connect.js';

export interface OrgDeps {
  config: ProxyConfig;
  catalog: Catalog;
  pool: SessionPool;
  control: ControlPools;
  cancelKeys: CancelKeys;
  tls: SecureContext | undefined;
  logger: Logger;
  throttle: AuthThrottle;
  /** Connections per address not yet authenticated (max_unauthenticated_per_address). */
  unauthenticated: UnauthenticatedConnections;
  /**
   * The secret of unknown users' mock salts, read at each handshake: the catalog's, shared by
   * every proxy of the catalog (a per-process one only when the catalog has none).
   */
  mockSecret(): Buffer;
  /** The proxy's configured upstream: the catalog's `default` server. */
  defaultUpstream: UpstreamTarget;
}

/** Startup parameters that are not session settings, or that the proxy decides itself. */
const notSettings = new Set(['user', 'database', 'options', 'replication']);

/**
 * `pg_catalog.set_config` calls (and their values, as statement parameters) for the client's
 * startup parameters; a `pgvpd.*` one is not the client's to set at all.
 */
function settingsOf(parameters: Map<string, string> | undefined): {
  values: string[];
  calls: string[];
} {
  const values: string[] = [];
  const calls: string[] = [];
  for (const [name, value] of parameters ?? []) {
    if (notSettings.has(name) || name.toLowerCase().startsWith('pgvpd.')) continue;
    values.push(name, value);
    calls.push(
      `pg_catalog.set_config($${String(values.length - 1)}, $${String(values.length)}, false)`,
    );
  }
  return { values, calls };
}

export class OrgSession {
  phase: Phase = 'startup';
  private readonly edge: ClientEdge;
  private readonly log: Logger;
  private readonly address: string;
  private readonly started = Date.now();
  private session: PooledSession | undefined;
  /**
   * A session readied before authentication (readyEarly) and its preparation, until the client
   * claims it, gives it back, or the pool takes it back for a waiting checkout.
   */
  private tentative: { session: PooledSession; ready: Promise<PooledSession> } | undefined;
  private loan: Loan | undefined;
  private clientKey: { processId: number; secretKey: number } | undefined;
  private abort: AbortController | undefined;
  /** Gives up this connection's place among its address's unauthenticated ones (idempotent). */
  private leaveUnauthenticated: (() => void) | undefined;
  /** The refusal is sent; fail() sends nothing more. */
  private answered = false;
  private finished!: () => void;
  /** Resolves once the session is closed, whatever the reason. */
  readonly done = new Promise<void>((resolve) => (this.finished = resolve));

  constructor(
    socket: Socket,
    private readonly deps: OrgDeps,
  ) {
    this.address = socket.remoteAddress ?? '?';
    this.log = deps.logger.child({ client: `${this.address}:${String(socket.remotePort ?? 0)}` });
    this.edge = new ClientEdge(socket, {
      tls: deps.tls,
      log: this.log,
      onCancel: (processId, secretKey) => this.forwardCancel(processId, secretKey),
    });
  }

  async run(): Promise<void> {
    const seconds = this.deps.config.handshake_timeout;
    const timer = setTimeout(() => {
      this.fail(proxyErrors.handshakeTimeout(this.phase, seconds));
    }, seconds * 1000);
    try {
      // Counted from accept until authentication ends; beyond the cap refused at once.
      const authenticating = this.deps.unauthenticated.enter(this.address);
      if (!authenticating) {
        throw proxyErrors.tooManyUnauthenticated(this.address, this.deps.unauthenticated.max);
      }
      this.leaveUnauthenticated = authenticating;
      const parameters = await this.edge.startup();
      if (parameters === undefined || this.phase === 'closed') return;
      this.enter('route');
      const username = parameters.get('user');
      if (username === undefined || username === '') throw proxyErrors.noUser();
      const database = parameters.get('database') || username;
      const org = this.deps.catalog.org(database);
      if (!org) throw proxyErrors.unknownDatabase(database);
      if (org.status !== 'active') throw proxyErrors.orgSuspended(database);
      this.log.info(
        { event: 'connect', org: org.id, user: username, database },
        'client connected',
      );

      this.enter('auth');
      const user = this.deps.catalog.user(org.id, username);
      const key = user ? this.keyOf(org, user.connect_as) : undefined;
      // While the client derives its SCRAM key (milliseconds of its CPU), an idle pooled session
      // is readied for it: context issued and set; its startup parameters wait for
      // authentication. Until then the pool may take it back for a checkout that would wait;
      // failed authentication hands it back to be reset like any released session.
      let early: Promise<PooledSession> | undefined;
      let authOk: Buffer;
      try {
        authOk = await this.authenticate(org, username, user, () => {
          if (key && !this.deps.throttle.recentlyFailed(this.address))
            early = this.readyEarly(key, org, username);
        });
      } catch (error) {
        // The refusal goes out before any clean-up, so that a wrong password (whose session
        // readied early is handed back here) is answered as fast as an unknown user.
        this.answer(error);
        if (early) await this.giveBack(early);
        throw error;
      }
      authenticating();
      this.log.info({ event: 'auth', result: 'ok', org: org.id, user: username }, 'authenticated');

      this.enter('context');
      let session = early ? await this.claim(early) : undefined;
      if (session) {
        // Readied early with the context only: the client's parameters, now it has authenticated.
        await this.applyParameters(session, parameters);
      } else {
        // The verifier matched, so the user and its key exist.
        if (!key) throw new Error('authenticated a user the catalog does not have');
        session = await this.deps.pool.checkout(key, this.signal());
        this.session = session;
        if (this.isClosed()) {
          this.session = undefined;
          await this.deps.pool.release(session);
          return;
        }
        await this.prepare(session, org, username, parameters);
      }
      this.enter('pipe');
      clearTimeout(timer);
      this.ready(session, authOk);
      const loan = lend(session, this.edge.socket, this.edge.reader.release());
      this.loan = loan;
      const end = await loan.ended;
      this.log.info(
        { event: 'disconnect', reason: end.reason, duration_ms: Date.now() - this.started },
        'session ended',
      );
      this.session = undefined;
      this.close();
      if (end.reason === 'client-closed') {
        // The client vanished without Terminate, perhaps with a statement still running: cancel
        // it, so that the backend does not go on working for nobody and the reset (or the
        // discard) happens now rather than after the pool's reset timeout.
        await sendCancel(session.key.target, session.backendPid, session.secretKey).catch(
          () => undefined,
        );
      }
      if (end.reusable) await this.deps.pool.release(session);
      else this.deps.pool.discard(session, end.reason);
    } catch (error) {
      this.fail(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Drain at shutdown. A lent session is ended by PostgreSQL (pgvpd.end_session), which sends the
   * client FATAL 57P01 itself, framed correctly; if that is not possible the loan is stopped and
   * the client closed. A handshake gets the proxy's own 57P01.
   */
  async terminate(): Promise<void> {
    const session = this.session;
    if (this.loan && session) {
      const target = session.key.target;
      const ended = await this.deps.control
        .terminate(
          session.key.database,
          session.backendPid,
          target === this.deps.defaultUpstream
            ? undefined
            : { host: target.host, port: target.port },
        )
        .catch(() => false);
      if (!ended) this.loan.stop();
      return;
    }
    this.fail(proxyErrors.shuttingDown());
  }

  /** Aborts a waiting checkout when the client goes; made only when a checkout may wait. */
  private signal(): AbortSignal {
    this.abort ??= new AbortController();
    if (this.phase === 'closed') this.abort.abort();
    return this.abort.signal;
  }

  private isClosed(): boolean {
    return this.phase === 'closed';
  }

  private enter(phase: Phase): void {
    if (this.phase === 'closed') throw new ClientLeft();
    this.phase = phase;
  }

  /**
   * SCRAM-SHA-256 by the proxy. `onClientFirst` runs once the client's first message is in and
   * the server-first-message sent, while the client derives its key. The verdict is answered
   * when the login throttle lets it go, right or wrong alike. Returns AuthenticationSASLFinal + AuthenticationOk,
   * for the caller to send together with the rest of the handshake.
   */
  private async authenticate(
    org: CatalogOrg,
    username: string,
    user: CatalogUser | undefined,
    onClientFirst: () => void,
  ): Promise<Buffer> {
    const scram = ScramServer.forUser(
      username,
      user?.verifier,
      orgMockSecret(this.deps.mockSecret(), org.id),
    );
    this.edge.write(send.authenticationSASL([scramMechanism]));
    try {
      const initial = decodeSASLInitialResponse((await this.edge.password()).body);
      const serverFirst = scram.receiveClientFirst(initial.mechanism, initial.data);
      // The server-first-message goes before anything is readied for a known user, so that it
      // does not come later for a known user than for an unknown one.
      this.edge.write(send.authenticationSASLContinue(serverFirst));
      onClientFirst();
      const outcome = scram.receiveClientFinal(
        decodeSASLResponse((await this.edge.password()).body),
      );
      // Right or wrong, the answer is held back as long as a failure here would be.
      const held = this.deps.throttle.settle(this.address, `${org.id}\0${username}`, outcome.ok);
      if (!outcome.ok) {
        this.log.info(
          { event: 'auth', result: 'refused', delay_ms: held.delayMs, step_ms: held.stepMs },
          outcome.error.logMessage,
        );
        await this.hold(held);
        throw outcome.error;
      }
      if (held.ready) {
        this.log.info(
          { event: 'auth', result: 'held', delay_ms: held.delayMs, step_ms: held.stepMs },
          'right password, answer held back by the login throttle',
        );
        await this.hold(held);
      }
      return Buffer.concat([
        send.authenticationSASLFinal(outcome.serverFinal),
        send.authenticationOk(),
      ]);
    } catch (error) {
      if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
      throw error;
    }
  }

  /** Waits until the throttle lets the answer go; the client leaving ends the wait (ClientLeft). */
  private async hold(held: HeldAnswer): Promise<void> {
    if (!held.ready) return;
    const signal = this.signal();
    const socket = this.edge.socket;
    let leave: () => void = () => undefined;
    const left = new Promise<never>((_, reject) => {
      leave = () => {
        held.cancel();
        reject(new ClientLeft());
      };
    });
    socket.once('close', leave);
    signal.addEventListener('abort', leave, { once: true });
    if (signal.aborted || socket.destroyed) leave();
    try {
      await Promise.race([held.ready, left]);
    } finally {
      socket.off('close', leave);
      signal.removeEventListener('abort', leave);
    }
  }

  private keyOf(org: CatalogOrg, connectAs: string): PoolKey {
    return { target: this.targetOf(org), database: org.target_database, role: connectAs };
  }

  /**
   * Before authentication: an idle session of the key, if there is one at once (this never
   * makes the pool grow or anyone wait), with the context issued and set, which depend only on
   * the org and the username; nothing of the client's own (startup parameters) reaches it before
   * the client has authenticated. Undefined when none is idle. The checkout is tentative (see
   * `tentative`): claim() makes it the client's after authentication, giveBack() returns it, and
   * the pool takes it back for a checkout that would otherwise wait.
   */
  private readyEarly(
    key: PoolKey,
    org: CatalogOrg,
    username: string,
  ): Promise<PooledSession> | undefined {
    const session = this.deps.pool.checkoutIdle(key, () => {
      // An authenticated client is waiting for the pool: the session is the pool's again, from
      // now on; the pool resets it once the statement under way on it (if any) has finished.
      const tentative = this.tentative;
      if (!tentative || tentative.session !== session) return Promise.resolve();
      this.tentative = undefined;
      return tentative.ready;
    });
    if (!session) return undefined;
    const ready = this.prepare(
      session,
      org,
      username,
      undefined,
      () => this.tentative?.session !== session,
    ).then(() => session);
    ready.catch(() => undefined);
    this.tentative = { session, ready };
    return ready;
  }

  /**
   * Authenticated: the session readied early becomes the client's, unless the pool has taken it
   * back meanwhile (undefined: the client checks out as usual).
   */
  private async claim(early: Promise<PooledSession>): Promise<PooledSession | undefined> {
    try {
      await early;
    } catch (error) {
      // Still this client's: its failure is the client's (fail() gives the session back).
      if (this.tentative?.ready === early) throw error;
    }
    const tentative = this.tentative;
    if (tentative?.ready !== early) return undefined;
    this.tentative = undefined;
    if (!this.deps.pool.confirm(tentative.session)) return undefined;
    this.session = tentative.session;
    return tentative.session;
  }

  /**
   * Not authenticated (refused, left, timed out): a session readied early goes back to the pool,
   * to be reset like a released one once its statement under way has finished; nothing more is
   * started on it. Not discarded: an unauthenticated client cannot make the pool throw sessions
   * away. Nothing to do if the pool has taken it back already.
   */
  private async giveBack(early: Promise<PooledSession>): Promise<void> {
    const tentative = this.tentative;
    if (tentative?.ready !== early) return;
    this.tentative = undefined;
    // No longer the pool's to take back: this release is the only one.
    if (!this.deps.pool.confirm(tentative.session)) return;
    await early.catch(() => undefined);
    void this.deps.pool.release(tentative.session);
  }

  private targetOf(org: CatalogOrg): UpstreamTarget {
    const server = this.deps.catalog.server(org.server);
    if (!server || server.host === null || server.port === null) return this.deps.defaultUpstream;
    return {
      host: server.host,
      port: server.port,
      tls: server.tls !== 'disable',
      tlsVerify: server.tls === 'verify-full',
      tlsCa: this.deps.defaultUpstream.tlsCa,
    };
  }

  /**
   * A fresh signed context for this checkout, and the client's startup parameters unless
   * `parameters` is undefined (a session readied before authentication: applyParameters() after
   * it). Once `abandoned()` says the session is no longer the client's, nothing is written to it.
   */
  private async prepare(
    session: PooledSession,
    org: CatalogOrg,
    username: string,
    parameters: Map<string, string> | undefined,
    abandoned: () => boolean = () => false,
  ): Promise<void> {
    const target = session.key.target;
    let token: string;
    try {
      token = await this.deps.control.issue({
        mode: 'org',
        server:
          target === this.deps.defaultUpstream
            ? undefined
            : { host: target.host, port: target.port },
        database: session.key.database,
        backendPid: session.backendPid,
        tenant: org.id,
        user: username,
        values: {},
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      throw proxyErrors.contextFailed(
        typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined,
        `issue_context: ${(error as Error).message}`,
      );
    }
    if (abandoned()) return;
    // One statement, one round trip: the client's parameters first, then the context (a
    // target list is evaluated in order), so that none of them can touch it.
    const { values, calls } = settingsOf(parameters);
    values.push(token);
    calls.push(`pgvpd.set_context($${String(values.length)})`);
    await this.deps.pool.runExtended(session, `select ${calls.join(', ')}`, values);
  }

  /**
   * The client's startup parameters on a session readied before authentication, which has its
   * context already: one statement, only if there are any. Set after the context, they touch it
   * no more than the client's own SET could (a `pgvpd.*` one is never applied); their
   * ParameterStatus is kept in `session.parameters` for ready().
   */
  private async applyParameters(
    session: PooledSession,
    parameters: Map<string, string>,
  ): Promise<void> {
    const { values, calls } = settingsOf(parameters);
    if (calls.length === 0) return;
    await this.deps.pool.runExtended(session, `select ${calls.join(', ')}`, values);
  }

  /**
   * The end of the handshake in one write: authentication's last messages, the session's
   * ParameterStatus, a proxy-issued BackendKeyData and ReadyForQuery.
   */
  private ready(session: PooledSession, authOk: Buffer): void {
    this.clientKey = this.deps.cancelKeys.issue({
      processId: session.backendPid,
      secretKey: session.secretKey,
      upstream: session.key.target,
    });
    const statuses = [...session.parameters].map(([name, value]) =>
      send.parameterStatus(name, value),
    );
    this.edge.write(
      Buffer.concat([
        authOk,
        ...statuses,
        send.backendKeyData(this.clientKey.processId, this.clientKey.secretKey),
        send.readyForQueryIdle(),
      ]),
    );
  }

  private async forwardCancel(processId: number, secretKey: Buffer): Promise<void> {
    const known = await this.deps.cancelKeys.forward(
      processId,
      secretKey,
      this.deps.defaultUpstream,
    );
    this.log.info({ event: 'cancel', known }, 'cancel request');
    this.close();
  }

  private fail(error: unknown): void {
    if (this.phase === 'closed') return;
    this.answer(error);
    const session = this.session;
    this.session = undefined;
    this.close();
    // A session checked out for a handshake that failed before the loan: its state is unknown.
    if (session) this.deps.pool.discard(session, 'handshake failed');
    // One readied before authentication is not the client's yet: it goes back to be reset.
    if (this.tentative) void this.giveBack(this.tentative.ready);
  }

  /** Logs why the handshake ends and sends the client its FATAL, once; fail() closes after. */
  private answer(error: unknown): void {
    if (this.answered || this.phase === 'closed') return;
    this.answered = true;
    if (error instanceof ProxyError) {
      this.log.warn(
        { event: 'refused', kind: error.kind, code: error.code, phase: this.phase },
        error.logMessage,
      );
      if (!this.edge.socket.destroyed && this.edge.socket.writable) {
        this.edge.write(
          send.errorResponse({
            severity: 'FATAL',
            code: error.code,
            message: error.message,
            hint: error.hint,
          }),
        );
      }
    } else if (!(error instanceof ClientLeft)) {
      this.log.error({ event: 'error', phase: this.phase, err: error }, 'unexpected failure');
      if (!this.edge.socket.destroyed) {
        this.edge.write(
          send.errorResponse({
            severity: 'FATAL',
            code: 'XX000',
            message: 'internal error in pgvpd proxy',
          }),
        );
      }
    }
  }

  close(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.leaveUnauthenticated?.();
    this.abort?.abort();
    if (this.clientKey)
      this.deps.cancelKeys.revoke(this.clientKey.processId, this.clientKey.secretKey);
    this.edge.socket.end();
    this.edge.socket.destroySoon();
    this.finished();
  }
}
