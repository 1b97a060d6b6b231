// What test files use to reach a real PostgreSQL: the run's shared server (see server.ts for how
// it is chosen and started) and one fresh database per test, dropped when the test ends.

import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import pg from 'pg';
import {
  type ServerKind,
  type ServerState,
  certificateDir,
  privateRunDir,
  readState,
  sharedRunDir,
  startServer,
  stopLocalSync,
} from './server.js';
import { type TestCertificates, ensureTestCertificates } from './tls.js';
import type { PoolKey } from '../../proxy/upstream/login.js';

export { testRoles, type ServerKind, type TestRole } from './server.js';
export type { TestCertificatePaths, TestCertificates } from './tls.js';

export interface ServerInfo {
  kind: ServerKind;
  host: string;
  port: number;
  /** Major version, e.g. 15. */
  version: number;
  /**
   * Set when the server accepts TLS connections (optional for clients; the `ssl` test role must
   * use it): `caCert` is the path of the CA that signed its certificate, `ca` that CA's PEM text,
   * ready for pg's `ssl: { ca }`. The certificate names localhost and 127.0.0.1. Undefined for
   * url and container servers, which are used as they are.
   */
  tls: { caCert: string; ca: string } | undefined;
}

/** The part of a tap Test the harness needs; any object with these works. */
export interface TestLike {
  readonly name: string;
  teardown(fn: () => unknown): void;
}

export interface TestDatabase {
  name: string;
  /** Superuser URL of this database. */
  url: string;
  /** URL of this database for another login role; no password means none in the URL. */
  urlFor(user: string, password?: string): string;
  /** Runs one statement as the superuser, on a small pool that is closed at teardown. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params?: unknown[],
  ): Promise<pg.QueryResult<R>>;
  server: ServerInfo;
}

let statePromise: Promise<ServerState> | undefined;

function serverState(): Promise<ServerState> {
  statePromise ??= locateServer().catch((error: unknown) => {
    throw new Error(
      `pgvpd test harness: no PostgreSQL server for the tests (${String(error)}). ` +
        'Set PGVPD_TEST_DATABASE_URL to a superuser URL, or PGVPD_TEST_SERVER=system|embedded|container.',
    );
  });
  return statePromise;
}

async function locateServer(): Promise<ServerState> {
  const shared = readState(sharedRunDir());
  // A state written before a server finished starting has version 0: not ours to use.
  if (shared !== undefined && shared.version > 0) return shared;
  // Not under the tap runner (or its `before` did not run): this process gets a server of its own.
  const runDir = privateRunDir();
  const state = await startServer(runDir, process.pid);
  process.once('exit', () => {
    if (state.kind === 'system' || state.kind === 'embedded') stopLocalSync(state);
    rmSync(runDir, { recursive: true, force: true });
  });
  return state;
}

/** Superuser URL of the shared server. */
export async function adminUrl(): Promise<string> {
  return (await serverState()).adminUrl;
}

/** Which server the run uses and its major version. */
export async function serverInfo(): Promise<ServerInfo> {
  return infoOf(await serverState());
}

function infoOf(state: ServerState): ServerInfo {
  const { kind, host, port, version } = state;
  const tls =
    state.tls === undefined
      ? undefined
      : { caCert: state.tls.caCert, ca: readFileSync(state.tls.caCert, 'utf8') };
  return { kind, host, port, version, tls };
}

/**
 * The run's test CA and `localhost` server certificate (see tls.ts), whatever the server kind:
 * for a proxy's own TLS listener, say. When the server has TLS, its certificate is this one.
 */
export async function testCertificates(): Promise<TestCertificates> {
  return ensureTestCertificates(certificateDir((await serverState()).runDir));
}

export function withDatabase(
  url: string,
  database: string,
  user?: string,
  password?: string,
): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  if (user !== undefined) {
    parsed.username = encodeURIComponent(user);
    parsed.password = password === undefined ? '' : encodeURIComponent(password);
  }
  return parsed.toString();
}

let sequence = 0;

function databaseName(testName: string): string {
  sequence += 1;
  const slug = testName
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 30);
  const unique = `${process.pid}_${sequence}_${randomBytes(3).toString('hex')}`;
  return `pgvpd_t_${slug}_${unique}`.slice(0, 63);
}

async function asAdmin<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates a fresh database on the shared server and drops it when `t` ends. */
export async function createTestDatabase(
  t: TestLike,
  opts: { name?: string } = {},
): Promise<TestDatabase> {
  const state = await serverState();
  const name = opts.name ?? databaseName(t.name);
  await asAdmin(state.adminUrl, (client) =>
    client.query(`create database ${client.escapeIdentifier(name)}`),
  );
  const url = withDatabase(state.adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  // An idle client error (e.g. the drop below terminating it) must not crash the test process.
  pool.on('error', () => undefined);

  t.teardown(async () => {
    await pool.end();
    await asAdmin(state.adminUrl, async (client) => {
      await client.query(
        'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
        [name],
      );
      await client.query(`drop database if exists ${client.escapeIdentifier(name)}`);
    });
  });

  return {
    name,
    url,
    urlFor: (user, password) => withDatabase(state.adminUrl, name, user, password),
    query: (sql, params) => pool.query(sql, params),
    server: infoOf(state),
  };
}

/** The pool key of `role` on the test server, without TLS (`database`: the test's by default). */
export function poolKeyFor(db: TestDatabase, role: string, database = db.name): PoolKey {
  return {
    target: {
      host: db.server.host,
      port: db.server.port,
      tls: false,
      tlsVerify: true,
      tlsCa: undefined,
    },
    database,
    role,
  };
}
