// pgvpd on a test database: install the SQL core, make login roles, and play the proxy's part
// (issue a context over a pgvpd_proxy connection, set it on the client's session).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { TestDatabase, TestLike } from './postgres.js';

export const setupSqlPath = new URL('../../sql/setup.sql', import.meta.url);

/** Runs sql/setup.sql on the database, as the superuser, the way `psql -f` would. */
export async function installPgvpd(db: TestDatabase): Promise<void> {
  await db.query(readFileSync(setupSqlPath, 'utf8'));
}

/** A connected client; errors after a drop or a terminate are expected in tests and ignored. */
export async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export interface LoginRole {
  name: string;
  password: string;
  url: string;
  connect(): Promise<pg.Client>;
}

/**
 * Creates a login role unique to this test (roles are cluster-wide and test files run in
 * parallel, so shared roles such as app_user are never altered by a test).
 * kind 'app': NOSUPERUSER NOBYPASSRLS NOINHERIT, registered as a pgvpd application role.
 * kind 'proxy': a member of pgvpd_proxy. kind 'admin': a member of pgvpd_admin.
 */
export async function loginRole(
  t: TestLike,
  db: TestDatabase,
  kind: 'app' | 'proxy' | 'admin',
): Promise<LoginRole> {
  const name = `pgvpd_${kind}_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('base64url');
  const options =
    kind === 'app'
      ? 'nosuperuser nobypassrls noinherit'
      : `nosuperuser nobypassrls inherit in role ${kind === 'proxy' ? 'pgvpd_proxy' : 'pgvpd_admin'}`;
  await db.query(`create role ${name} login password '${password}' ${options}`);
  if (kind === 'app') await db.query('select pgvpd.add_app_role($1)', [name]);
  t.teardown(async () => {
    // The database may be gone already; the role then owns nothing and drops cleanly.
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  const url = db.urlFor(name, password);
  return { name, password, url, connect: () => connect(url) };
}

export async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  return rows[0]!.pid;
}

/** What the proxy does after authentication: issue a token for the session's pid, then set it. */
export async function giveContext(
  proxy: pg.Client,
  session: pg.Client,
  tenant: string,
  user: string | null = null,
  vals: Record<string, string> = {},
): Promise<string> {
  const pid = await backendPid(session);
  const { rows } = await proxy.query<{ token: string }>(
    'select pgvpd.issue_context($1, $2, $3, $4) as token',
    [pid, tenant, user, JSON.stringify(vals)],
  );
  const token = rows[0]!.token;
  await session.query('select pgvpd.set_context($1)', [token]);
  return token;
}

/** The SQLSTATE of a rejected promise, or 'no error'. */
export async function sqlstate(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return (error as { code?: string }).code ?? `no code: ${String(error)}`;
  }
}

/** The context path the database uses (docs/guard.md): `guard` with the pgvpd_guard module. */
export async function contextPath(db: TestDatabase): Promise<string> {
  const { rows } = await db.query<{ path: string }>('select path from pgvpd.context_path()');
  return rows[0]!.path;
}

/**
 * What lint() says of a sound database about explicit locks: on the SQL path each tenant role
 * that may lock a protected table and has no lock_timeout or statement_timeout of its own gets a
 * lock_without_timeout warning; on the guard path none (the module refuses such locks). As
 * `severity check_name object` lines, sorted, to compare with lintLines().
 */
export async function lockWarnings(db: TestDatabase, roles: string[]): Promise<string[]> {
  if ((await contextPath(db)) === 'guard') return [];
  return roles.map((role) => `warning lock_without_timeout ${role}`).sort();
}

/** lint()'s findings as `severity check_name object` lines, sorted. */
export async function lintLines(db: TestDatabase): Promise<string[]> {
  const { rows } = await db.query<{ severity: string; check_name: string; object: string }>(
    'select severity, check_name, object from pgvpd.lint()',
  );
  return rows.map((r) => `${r.severity} ${r.check_name} ${r.object}`).sort();
}

/**
 * A login role with these options (e.g. 'bypassrls', 'in role x'), unique to this test and
 * dropped at its end; unlike loginRole it is not registered anywhere.
 */
export async function scratchRole(
  t: TestLike,
  db: TestDatabase,
  options: string,
): Promise<{ name: string; password: string; url: string }> {
  const name = `scratch_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('hex');
  await db.query(`create role ${name} login password '${password}' ${options}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  return { name, password, url: db.urlFor(name, password) };
}
