// The proxy's control connections: small pools, one per database (a context record lives in the
// database of the session it belongs to), logged in as a pgvpd_proxy member from control_url.
// Through them the proxy asks the database for a signed context for a backend pid; the token
// comes back and is only ever sent on as a bind parameter. Through them too the proxy registers
// itself in a database, renews and ends that registration (the key of its switch grants:
// instance-keys.ts), and looks up the SCRAM verifier of an application role (pooled app mode).
import { parse as parseConnectionString } from 'pg-connection-string';
import pg from 'pg';
import { proxyErrors } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { parseVerifier, type ScramVerifier } from '../auth/scram-verifier.js';

export interface ContextRequest {
  /**
   * Which registry the database checks the backend's role against: `app` (issue_context: a
   * registered application role, tenant from the username) or `org` (issue_org_context: the
   * connect_as role of `user` in org `tenant`, an org id). A backend of any other role is
   * refused with 28000 before anything is signed.
   */
  mode: 'app' | 'org';
  /** Server of the session when it is not control_url's (org mode, dedicated placement). */
  server?: { host: string; port: number } | undefined;
  database: string;
  backendPid: number;
  tenant: string;
  user: string | null;
  values: Record<string, string>;
}

/**
 * An issued context: the token, and the path the database chose (anything but `sql` is treated
 * as the guard path, where only set_context may put the token in).
 */
export interface IssuedContext {
  token: string;
  path: 'sql' | 'guard';
}

// Each with the path (pgvpd.proxy_context_path, migration 000020) and, for a database whose SQL
// is older than this proxy, without it (the token then goes in with set_context, as on the guard
// path: right on both paths).
const issueCall = {
  app: 'pgvpd.issue_context($1::int, $2::text, $3::text, $4::jsonb)',
  org: 'pgvpd.issue_org_context($1::int, $2::uuid, $3::text, $4::jsonb)',
} as const;
const issueStatements = {
  app: {
    fn: 'pgvpd.issue_context',
    name: 'pgvpd_issue_context',
    text: `select ${issueCall.app} as token, pgvpd.proxy_context_path() as path`,
    olderName: 'pgvpd_issue_context_older',
    olderText: `select ${issueCall.app} as token`,
  },
  org: {
    fn: 'pgvpd.issue_org_context',
    name: 'pgvpd_issue_org_context',
    text: `select ${issueCall.org} as token, pgvpd.proxy_context_path() as path`,
    olderName: 'pgvpd_issue_org_context_older',
    olderText: `select ${issueCall.org} as token`,
  },
} as const;

/** How long a database found without pgvpd.proxy_context_path is asked without it. */
const OLDER_SQL_RECHECK_MS = 60_000;

/** A control pool's identity: the server (null: control_url's) and the database. */
function poolId(database: string, server?: { host: string; port: number }): string {
  return JSON.stringify([server?.host ?? null, server?.port ?? null, database]);
}

export class ControlPools {
  private readonly pools = new Map<string, pg.Pool>();
  /** The context path each database gave with its last issued context. */
  private readonly paths = new Map<string, IssuedContext['path']>();
  /** Databases whose SQL lacks pgvpd.proxy_context_path (000020), and since when (ms). */
  private readonly olderSql = new Map<string, number>();
  /** Pools that have answered a lookup once: a later failure does not make them go. */
  private readonly answered = new Set<string>();
  private readonly base: pg.PoolConfig;

  constructor(
    controlUrl: string,
    private readonly size: number,
    /** Each issue's round trip is timed here, and whether the database answered. */
    private readonly metrics?: Metrics,
  ) {
    // The database is chosen per session; everything else comes from control_url.
    const parsed = parseConnectionString(controlUrl);
    delete parsed.database;
    this.base = parsed as pg.PoolConfig;
  }

  /**
   * The control role logs in with control_url's credentials on every server: in org mode a
   * dedicated org may live on another server, where a role of the same name and password exists.
   */
  private pool(database: string, server?: { host: string; port: number }): pg.Pool {
    const id = poolId(database, server);
    let pool = this.pools.get(id);
    if (!pool) {
      pool = new pg.Pool({
        ...this.base,
        ...(server ? { host: server.host, port: server.port } : {}),
        database,
        max: this.size,
        idleTimeoutMillis: 60_000,
        application_name: 'pgvpd-control',
        // A context record lives in an unlogged table and dies with its backend, so waiting for
        // the WAL flush of issue_context's commit (the FK check locks a signing_key row, which
        // writes WAL) buys nothing: it cost ~0.6 ms of every handshake on this machine.
        options: '-c synchronous_commit=off',
      });
      // An idle control connection that dies is replaced on the next checkout.
      pool.on('error', () => undefined);
      this.pools.set(id, pool);
    }
    return pool;
  }

  /**
   * Calls pgvpd.issue_context (app) or pgvpd.issue_org_context (org); returns the token and the
   * database's context path (pgvpd.proxy_context_path, in the same statement): `sql` where the
   * accessors check the setting on every statement, `guard` where set_context must verify it.
   */
  async issue(request: ContextRequest): Promise<IssuedContext> {
    // Prepared once per control connection (a named statement): parsing and planning the call
    // again for every handshake cost the control backend ~0.04 ms each time.
    const statement = issueStatements[request.mode];
    const id = poolId(request.database, request.server);
    const since = this.olderSql.get(id);
    const older = since !== undefined && performance.now() - since < OLDER_SQL_RECHECK_MS;
    const issued = this.pool(request.database, request.server).query<{
      token: string;
      path?: string | null;
    }>({
      name: older ? statement.olderName : statement.name,
      text: older ? statement.olderText : statement.text,
      values: [request.backendPid, request.tenant, request.user, JSON.stringify(request.values)],
    });
    let rows: { token: string; path?: string | null }[];
    try {
      ({ rows } = await this.observed(issued));
    } catch (error) {
      // 42883 undefined_function, for the path's function alone: the database's SQL predates it.
      const { code, message } = error as { code?: unknown; message?: unknown };
      if (
        older ||
        code !== '42883' ||
        typeof message !== 'string' ||
        !message.includes('proxy_context_path')
      )
        throw error;
      this.olderSql.set(id, performance.now());
      return this.issue(request);
    }
    if (!older) this.olderSql.delete(id);
    const token = rows[0]?.token;
    if (typeof token !== 'string') throw new Error(`${statement.fn} returned no token`);
    const path = rows[0]?.path === 'sql' ? 'sql' : 'guard';
    this.paths.set(id, path);
    return { token, path };
  }

  /**
   * The path the database gave with the last context issued in it (`sql` before the first): a
   * guess, for work that may start before the issue answers and is redone when it was wrong.
   */
  lastPath(database: string, server?: { host: string; port: number }): IssuedContext['path'] {
    return this.paths.get(poolId(database, server)) ?? 'sql';
  }

  /**
   * The issue's round trip, timed, and whether the database answered: a refusal by it (a
   * SQLSTATE outside classes 08 and 57P) means it did; a socket error (ECONNREFUSED) or a
   * connection-class SQLSTATE means it did not.
   */
  private observed<T>(query: Promise<T>): Promise<T> {
    const metrics = this.metrics;
    if (!metrics) return query;
    const started = performance.now();
    query.then(
      () => {
        metrics.contextIssued((performance.now() - started) / 1000);
        metrics.controlUp(true);
      },
      (error: unknown) => {
        metrics.contextIssued((performance.now() - started) / 1000);
        const code = (error as { code?: unknown }).code;
        metrics.controlUp(
          typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|57P)/.test(code),
        );
      },
    );
    return query;
  }

  /**
   * pgvpd.app_role_verifier: the SCRAM verifier of an application role the proxy may serve, to
   * check a pooled app-mode client's proof against (and log in upstream with its ClientKey).
   * `problem` says why an eligible role has none ('md5', 'no password'); both are undefined for
   * any other name, known to the server or not (the client then gets the 28P01 of a wrong
   * password), and for a stored verifier this proxy cannot parse. The role goes as a parameter of
   * a prepared statement: nothing else of the client's startup reaches the control connection.
   */
  async appRoleVerifier(
    database: string,
    role: string,
    server?: { host: string; port: number },
  ): Promise<{
    verifier: ScramVerifier | undefined;
    problem: 'md5' | 'no password' | undefined;
    /** The database's mock secret (pgvpd.proxy_mock_secret): the same for every proxy. */
    mockSecret: Buffer;
  }> {
    let rows: { verifier: string | null; problem: string | null; mock: Buffer | null }[];
    const pool = this.pool(database, server);
    try {
      ({ rows } = await pool.query<{
        verifier: string | null;
        problem: string | null;
        mock: Buffer | null;
      }>({
        name: 'pgvpd_app_role_verifier',
        text: 'select v.verifier, v.problem, pgvpd.proxy_mock_secret() as mock from pgvpd.app_role_verifier($1::text) v',
        values: [role],
      }));
    } catch (error) {
      // The name is the client's, sent before it authenticated: a pool that has never answered
      // (the database does not exist, has no pgvpd, refuses the control role, or the server is
      // full or down) is not kept, so that made-up names make the proxy hold nothing.
      if (!this.answered.has(poolId(database, server))) this.forget(pool, database, server);
      throw error;
    }
    this.answered.add(poolId(database, server));
    const row = rows[0];
    const verifier = row?.verifier ? parseVerifier(row.verifier) : undefined;
    const problem =
      row?.problem === 'md5' || row?.problem === 'no password' ? row.problem : undefined;
    const mockSecret = row?.mock;
    if (!Buffer.isBuffer(mockSecret) || mockSecret.length !== 32)
      throw new Error('pgvpd.proxy_mock_secret() gave no 32-byte secret');
    return { verifier, problem: verifier ? undefined : problem, mockSecret };
  }

  /**
   * Forgets a pool that has never answered (the next lookup makes a new one), and ends it once no
   * lookup waits on it: pg-pool leaves the requests queued on a pool that is ending unanswered,
   * so each failing lookup checks, and the last one ends it.
   */
  private forget(pool: pg.Pool, database: string, server?: { host: string; port: number }): void {
    const id = poolId(database, server);
    if (this.pools.get(id) === pool) this.pools.delete(id);
    if (pool.waitingCount === 0 && !pool.ending) pool.end().catch(() => undefined);
  }

  /**
   * Asks PostgreSQL to end a proxied backend (used when draining): PostgreSQL then sends the
   * client FATAL 57P01 itself, framed correctly, through the raw pipe. pgvpd.end_session ends
   * only sessions that carry a pgvpd context.
   */
  async terminate(
    database: string,
    backendPid: number,
    server?: { host: string; port: number },
  ): Promise<boolean> {
    const { rows } = await this.pool(database, server).query<{ ended: boolean }>(
      'select pgvpd.end_session($1::int) as ended',
      [backendPid],
    );
    return rows[0]?.ended === true;
  }

  /**
   * pgvpd.register_instance: a new registration of this proxy in the database, active for
   * `leaseSeconds` unless renewed, and the 32-byte key of its switch grants (returned once).
   */
  async registerInstance(
    database: string,
    server: { host: string; port: number } | undefined,
    name: string,
    leaseSeconds: number,
  ): Promise<{ instance: string; secret: Buffer }> {
    const { rows } = await this.pool(database, server).query<{
      instance_id: string;
      secret: string;
    }>('select instance_id::text, secret from pgvpd.register_instance($1::text, $2::int)', [
      name,
      leaseSeconds,
    ]);
    const row = rows[0];
    if (
      row === undefined ||
      !/^[0-9]+$/.test(row.instance_id) ||
      !/^[0-9a-f]{64}$/.test(row.secret)
    )
      throw new Error('pgvpd.register_instance returned no instance id and 32-byte hex key');
    return { instance: row.instance_id, secret: Buffer.from(row.secret, 'hex') };
  }

  /**
   * pgvpd.renew_instance: true if the instance was active and now lives `leaseSeconds` more;
   * false if the database no longer knows it as active (retired, or its lease ran out).
   */
  async renewInstance(
    database: string,
    server: { host: string; port: number } | undefined,
    instance: string,
    leaseSeconds: number,
  ): Promise<boolean> {
    const { rows } = await this.pool(database, server).query<{ renewed: boolean }>(
      'select pgvpd.renew_instance($1::bigint, $2::int) as renewed',
      [instance, leaseSeconds],
    );
    return rows[0]?.renewed === true;
  }

  /** pgvpd.leave_instance: retires the instance; contexts switched under its key die with it. */
  async leaveInstance(
    database: string,
    server: { host: string; port: number } | undefined,
    instance: string,
  ): Promise<void> {
    await this.pool(database, server).query('select pgvpd.leave_instance($1::bigint)', [instance]);
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((pool) => pool.end().catch(() => undefined)));
  }
}

/**
 * Issues a context for a session's backend; a refusal becomes the client's ProxyError
 * (contextFailed), with the SQLSTATE the database gave (28000 for a role it will not serve).
 */
export async function issueContext(
  control: ControlPools,
  request: ContextRequest,
): Promise<IssuedContext> {
  try {
    return await control.issue(request);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw proxyErrors.contextFailed(
      typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined,
      `issue_context: ${(error as Error).message}`,
    );
  }
}
