// One client connection in org mode, as a state machine:
//   startup → route → auth → context → pipe → closed
// route: the database name names the org (catalog snapshot; unknown → 3D000, suspended → 28000).
// auth: the proxy itself runs SCRAM-SHA-256 against the org user's stored verifier; an unknown
// user gets a mock exchange, so unknown user and wrong password both end in the same 28P01, and
// repeated failures from one address are slowed down. context: a pooled upstream session of the
// user's connect_as role on the org's server and database is checked out, gets a fresh signed
// context (org id, username) and the client's startup parameters, then is lent to the client;
// when the client leaves it goes back to the pool (ROLLBACK, DISCARD ALL).
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { AuthThrottle } from './auth-throttle.js';
import type { CancelKeys } from './cancel-keys.js';
import type { Catalog, CatalogOrg, CatalogUser } from './catalog.js';
import { ClientEdge, ClientLeft } from './client-edge.js';
import type { ProxyConfig } from './config.js';
import type { ControlPools } from './control.js';
import { ProxyError, proxyErrors } from './errors.js';
import type { Logger } from './logger.js';
import { lend, type Loan } from './pool/lend.js';
import type { SessionPool } from './pool/session-pool.js';
import type { PoolKey, PooledSession } from './pool/upstream-login.js';
import { ProtocolViolation } from './protocol/reader.js';
import * as send from './protocol/server-messages.js';
import {
  ScramServer,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  scramMechanism,
} from './scram-server.js';
import type { Phase } from './session.js';
import { sendCancel, type UpstreamTarget } from './upstream.js';

export interface OrgDeps {
  config: ProxyConfig;
  catalog: Catalog;
  pool: SessionPool;
  control: ControlPools;
  cancelKeys: CancelKeys;
  tls: SecureContext | undefined;
  logger: Logger;
  throttle: AuthThrottle;
  /** Per-proxy secret for the mock salts of unknown users. */
  mockSecret: Buffer;
  /** The proxy's configured upstream: the catalog's `default` server. */
  defaultUpstream: UpstreamTarget;
}

/** Startup parameters that are not session settings, or that the proxy decides itself. */
const notSettings = new Set(['user', 'database', 'options', 'replication']);

export class OrgSession {
  phase: Phase = 'startup';
  private readonly edge: ClientEdge;
  private readonly log: Logger;
  private readonly address: string;
  private readonly started = Date.now();
  private session: PooledSession | undefined;
  private loan: Loan | undefined;
  private clientKey: { processId: number; secretKey: number } | undefined;
  private abort: AbortController | undefined;
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
      // is readied for it: context issued, parameters applied. Failed authentication hands it
      // back to be reset like any released session.
      let early: Promise<PooledSession> | undefined;
      let authOk: Buffer;
      try {
        authOk = await this.authenticate(username, user, () => {
          if (key && !this.deps.throttle.recentlyFailed(this.address))
            early = this.readyEarly(key, org, username, parameters);
        });
      } catch (error) {
        if (early) await this.giveBack(early);
        throw error;
      }
      this.log.info({ event: 'auth', result: 'ok', org: org.id, user: username }, 'authenticated');

      this.enter('context');
      let session = early ? await early : undefined;
      if (!session) {
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
   * the client is about to derive its key. Returns AuthenticationSASLFinal + AuthenticationOk,
   * for the caller to send together with the rest of the handshake.
   */
  private async authenticate(
    username: string,
    user: CatalogUser | undefined,
    onClientFirst: () => void,
  ): Promise<Buffer> {
    const scram = ScramServer.forUser(username, user?.verifier, this.deps.mockSecret);
    this.edge.write(send.authenticationSASL([scramMechanism]));
    try {
      const initial = decodeSASLInitialResponse((await this.edge.password()).body);
      const serverFirst = scram.receiveClientFirst(initial.mechanism, initial.data);
      onClientFirst();
      this.edge.write(send.authenticationSASLContinue(serverFirst));
      const outcome = scram.receiveClientFinal(
        decodeSASLResponse((await this.edge.password()).body),
      );
      if (!outcome.ok) {
        const delay = this.deps.throttle.fail(this.address);
        this.log.info(
          { event: 'auth', result: 'refused', delay_ms: delay },
          outcome.error.logMessage,
        );
        if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
        throw outcome.error;
      }
      this.deps.throttle.succeed(this.address);
      return Buffer.concat([
        send.authenticationSASLFinal(outcome.serverFinal),
        send.authenticationOk(),
      ]);
    } catch (error) {
      if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
      throw error;
    }
  }

  private keyOf(org: CatalogOrg, connectAs: string): PoolKey {
    return { target: this.targetOf(org), database: org.target_database, role: connectAs };
  }

  /**
   * Before authentication: an idle session of the key, if there is one at once (this never
   * makes the pool grow or anyone wait), readied for the client. Undefined when none is idle.
   */
  private readyEarly(
    key: PoolKey,
    org: CatalogOrg,
    username: string,
    parameters: Map<string, string>,
  ): Promise<PooledSession> | undefined {
    const session = this.deps.pool.checkoutIdle(key);
    if (!session) return undefined;
    this.session = session;
    const ready = this.prepare(session, org, username, parameters).then(
      () => session,
      (error: unknown) => {
        // Not yet the client's: a failed statement is reset like a release, not discarded for
        // good, so that an unauthenticated client cannot make the pool throw sessions away.
        if (this.session === session) {
          this.session = undefined;
          void this.deps.pool.release(session);
        }
        throw error;
      },
    );
    ready.catch(() => undefined);
    return ready;
  }

  /** Authentication failed: a session readied early goes back to the pool, to be reset. */
  private async giveBack(early: Promise<PooledSession>): Promise<void> {
    const session = await early.catch(() => undefined);
    if (session && this.session === session) {
      this.session = undefined;
      void this.deps.pool.release(session);
    }
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

  /** A fresh signed context for this checkout, and the client's startup parameters. */
  private async prepare(
    session: PooledSession,
    org: CatalogOrg,
    username: string,
    parameters: Map<string, string>,
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
    // One statement, one round trip: the client's parameters first, then the context (a
    // target list is evaluated in order), so that none of them can touch it; a `pgvpd.*`
    // startup parameter is not the client's to set at all.
    const values: string[] = [];
    const calls: string[] = [];
    for (const [name, value] of parameters) {
      if (notSettings.has(name) || name.toLowerCase().startsWith('pgvpd.')) continue;
      values.push(name, value);
      calls.push(
        `pg_catalog.set_config($${String(values.length - 1)}, $${String(values.length)}, false)`,
      );
    }
    values.push(token);
    calls.push(`pgvpd.set_context($${String(values.length)})`);
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
    const session = this.session;
    this.session = undefined;
    this.close();
    // A session checked out for a handshake that failed before the loan: its state is unknown.
    if (session) this.deps.pool.discard(session, 'handshake failed');
  }

  close(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.abort?.abort();
    if (this.clientKey)
      this.deps.cancelKeys.revoke(this.clientKey.processId, this.clientKey.secretKey);
    this.edge.socket.end();
    this.edge.socket.destroySoon();
    this.finished();
  }
}
