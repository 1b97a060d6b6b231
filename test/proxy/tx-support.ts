// Shared set-up of the transaction-mode driver matrix (tx-drivers-*.test.ts): a proxy with
// pool_mode = transaction and fewer pooled backends than clients, what each org's alice must see,
// and the checks that clients of both orgs really shared a backend.
//
// PGVPD_TX_DRIVERS_PROXY chooses the proxy: `org` (the default) an org-mode proxy
// (org-fixture.ts; alice logs in to database acme-analytics or beta-db, the tenant ids are
// uuids), `app` an app-mode proxy (fixture.ts; alice logs in as `<app role>.acme:alice` or
// `<app role>.beta:alice` with the role's own password, the tenant ids are `acme` and `beta`).
// Either way both orgs' clients share one pool key, public.docs holds a1, a2 of acme and b1, b2,
// b3 of beta, and the context carries the tenant and the user alice. The app-tx-drivers-*.test.ts
// files run the matrix with `app`.
//
// PGVPD_TX_DRIVERS_MODE=session runs the same files in session mode with a pool large enough
// for every client: that checks the tests' own plumbing (and that they detect a backend shared
// where none may be) apart from transaction pooling.
import type pg from 'pg';
import type { Test } from 'tap';
import type { ConfigKey } from '../../proxy/config.js';
import type { ProxyHandle } from '../../proxy/index.js';
import type { TestDatabase, TestLike } from '../support/postgres.js';
import { proxyFixture } from './fixture.js';
import { orgFixture } from './org-fixture.js';
import type { OrgLogin } from './org-support.js';

/** The mode the tx-drivers files run in unless PGVPD_TX_DRIVERS_MODE says otherwise. */
const TX_DRIVERS_DEFAULT_MODE: PoolMode = 'transaction';

export type PoolMode = 'session' | 'transaction';

function chosenMode(): PoolMode {
  const forced = process.env.PGVPD_TX_DRIVERS_MODE;
  if (forced === 'session' || forced === 'transaction') return forced;
  if (forced !== undefined && forced !== '') {
    throw new Error(`PGVPD_TX_DRIVERS_MODE must be session or transaction, not ${forced}`);
  }
  return TX_DRIVERS_DEFAULT_MODE;
}

/** The pool mode of this run (see the file's opening comment). */
export const txMode: PoolMode = chosenMode();
export const transactionMode = txMode === 'transaction';

export type ProxyKind = 'org' | 'app';

function chosenProxy(): ProxyKind {
  const forced = process.env.PGVPD_TX_DRIVERS_PROXY;
  if (forced === undefined || forced === '' || forced === 'org') return 'org';
  if (forced === 'app') return 'app';
  throw new Error(`PGVPD_TX_DRIVERS_PROXY must be org or app, not ${forced}`);
}

/** The kind of proxy of this run (see the file's opening comment). */
export const txProxy: ProxyKind = chosenProxy();

/** The type of public.docs.org_id: the org catalog's uuid, or app mode's tenant text. */
export const orgIdType: 'uuid' | 'text' = txProxy === 'org' ? 'uuid' : 'text';

export const orgNames = ['acme', 'beta'] as const;
export type Org = (typeof orgNames)[number];

/** Org mode's logins (app mode's depend on the fixture's role: TxFixture.login). */
const orgLogins = {
  acme: { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' },
  beta: { database: 'beta-db', user: 'alice', password: 'alice-at-beta' },
} as const;

/** The bodies of public.docs each org's alice sees, sorted. */
export const expectedRows: Record<Org, string[]> = {
  acme: ['a1', 'a2'],
  beta: ['b1', 'b2', 'b3'],
};

/** One statement that says which backend answered, whose context it holds and what it sees. */
export const viewSql = `select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
  (select coalesce(array_agg(body order by body), '{}') from public.docs) as rows`;

export interface View {
  pid: number;
  tenant: string | null;
  rows: string[];
}

/** What the driver files use of the proxy and its database, whichever the kind. */
export interface TxProxy {
  /** The test database (its superuser connection). */
  db: TestDatabase;
  proxy: ProxyHandle;
  /** Each org's tenant id: what pgvpd.current_tenant_id() and public.docs.org_id hold. */
  orgs: Record<Org, string>;
  /** The role the pooled backends log in as (org mode's connect_as, app mode's app role). */
  connectAs: string;
}

export interface TxFixture {
  f: TxProxy;
  mode: PoolMode;
  /** pool_size of the proxy: `backends` in transaction mode, 20 in session mode. */
  poolSize: number;
  login(org: Org): OrgLogin;
  /** libpq conninfo through the proxy without the password (PGPASSWORD carries it). */
  conninfo(org: Org): string;
  /** pgJDBC's URL through the proxy, with `params` appended (user and password included). */
  jdbcUrl(org: Org, params?: Record<string, string>): string;
  /** What `org` must see: its tenant id and its rows (compare with a View minus pid). */
  expected(org: Org): { tenant: string; rows: string[] };
  /** The org whose tenant id this is; throws on any other value. */
  orgOf(tenant: unknown): Org;
}

/**
 * A proxy of this run's kind whose pool has `backends` (1 or 2) upstream sessions for all clients
 * of both orgs (one pooled role, one shared database: one pool key) in transaction mode.
 */
export async function txFixture(
  t: TestLike,
  backends: number,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
): Promise<TxFixture> {
  const poolSize = transactionMode ? backends : 20;
  const settings = { pool_mode: txMode, pool_size: poolSize, ...overrides };
  const { f, login } =
    txProxy === 'org' ? await orgProxy(t, settings) : await appProxy(t, settings);
  const expected = (org: Org) => ({ tenant: f.orgs[org], rows: expectedRows[org] });
  return {
    f,
    mode: txMode,
    poolSize,
    login,
    conninfo: (org) =>
      `host=127.0.0.1 port=${String(f.proxy.port)} dbname=${login(org).database} user=${login(org).user}`,
    jdbcUrl(org, params = {}) {
      const { database, user, password } = login(org);
      const query = new URLSearchParams({ user, password, ...params });
      return `jdbc:postgresql://127.0.0.1:${String(f.proxy.port)}/${database}?${query.toString()}`;
    },
    expected,
    orgOf(tenant) {
      for (const org of orgNames) if (tenant === f.orgs[org]) return org;
      throw new Error(`not a tenant of this fixture: ${String(tenant)}`);
    },
  };
}

type Settings = Partial<Record<ConfigKey, unknown>>;
type Built = { f: TxProxy; login: (org: Org) => OrgLogin };

/** Org mode: org-fixture.ts as it is (its public.docs, its two orgs' alice). */
async function orgProxy(t: TestLike, settings: Settings): Promise<Built> {
  const f = await orgFixture(t, settings);
  return { f, login: (org) => ({ port: f.proxy.port, ...orgLogins[org] }) };
}

/**
 * App mode: fixture.ts's proxy (its app role, its database) with the user as a second context
 * value, and a public.docs like org-fixture.ts's whose org_id holds the tenant as text.
 */
async function appProxy(t: TestLike, settings: Settings): Promise<Built> {
  const f = await proxyFixture(t, { context_variables: ['tenant_id', 'user'], ...settings });
  const role = f.app.name;
  await f.db.query(`
    create table public.docs (id serial primary key, org_id text not null, body text);
    insert into public.docs (org_id, body) values
      ('acme', 'a1'), ('acme', 'a2'), ('beta', 'b1'), ('beta', 'b2'), ('beta', 'b3');
    select pgvpd.protect('public.docs', 'org_id');
    grant select, insert on public.docs to ${role};
    grant usage on sequence public.docs_id_seq to ${role};
  `);
  return {
    f: { db: f.db, proxy: f.proxy, orgs: { acme: 'acme', beta: 'beta' }, connectAs: role },
    login: (org) => ({
      port: f.proxy.port,
      database: f.db.name,
      user: `${f.userFor(org)}:alice`,
      password: f.app.password,
    }),
  };
}

/** Runs viewSql on a pg client (simple protocol) and returns its one row. */
export async function pgView(client: pg.Client | pg.PoolClient): Promise<View> {
  const { rows } = await client.query<View>(viewSql);
  return rows[0]!;
}

/** The backend pids each org's clients were answered by. */
export class BackendLog {
  readonly pids: Record<Org, Set<number>> = { acme: new Set(), beta: new Set() };

  add(org: Org, pid: number): void {
    this.pids[org].add(pid);
  }

  /** pids that answered clients of both orgs, ascending. */
  shared(): number[] {
    return [...this.pids.acme].filter((pid) => this.pids.beta.has(pid)).sort((a, b) => a - b);
  }
}

/**
 * Transaction mode: at least one backend answered clients of both orgs (so the test really
 * exercised switching owners), and no more backends served them than the pool has. Session mode,
 * when every client held its connection for the whole of what `log` records (`heldThroughout`):
 * no backend answered both; otherwise a session backend is reused after a logout and nothing is
 * checked.
 */
export function assertSharing(
  t: Test,
  log: BackendLog,
  poolSize: number,
  what: string,
  heldThroughout = true,
): void {
  const all = new Set([...log.pids.acme, ...log.pids.beta]);
  t.ok(log.pids.acme.size > 0 && log.pids.beta.size > 0, `${what}: both orgs were answered`);
  if (transactionMode) {
    t.ok(
      log.shared().length > 0,
      `${what}: one backend answered both orgs (acme ${[...log.pids.acme].join(',')}, beta ${[...log.pids.beta].join(',')})`,
    );
    t.ok(
      all.size <= poolSize,
      `${what}: at most ${String(poolSize)} backends (${String(all.size)})`,
    );
  } else if (heldThroughout) {
    t.same(log.shared(), [], `${what}: session mode, no backend answered both orgs`);
  } else {
    t.comment(`${what}: session mode with short connections, backend sharing not checked`);
  }
}

/** A copy of `line` without its pid (which differs run to run). */
export function withoutPid<T extends { pid?: unknown }>(line: T): Omit<T, 'pid'> {
  const copy: Partial<T> = { ...line };
  delete copy.pid;
  return copy as Omit<T, 'pid'>;
}

/** Parses the JSON lines a helper program (Python, Java) printed, one object per line. */
export function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
