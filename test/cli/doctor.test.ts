// pgvpd doctor: every check passes on a good database, and each planted problem gives a FAIL
// line that names it and its fix, and exit code 1. With admin_port, the HTTP control plane's
// login (admin_control_url, else control_url) must be a member of pgvpd_api.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { contextPath, installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';
import { closedPort, pgvpd, type CliResult } from './run-cli.js';

const { version } = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string };

interface Good {
  /** doctor's line for the context path setup chose for the run's server. */
  pathLine: string;
  db: TestDatabase;
  app: LoginRole;
  proxy: LoginRole;
  /** host:port of the database, as doctor prints the upstream it defaults to. */
  upstream: string;
}

/** A database doctor has nothing to say against: pgvpd installed, its one tenant table protected. */
async function goodDatabase(t: Test): Promise<Good> {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  await db.query(
    `create table public.docs (id int, tenant_id text); select pgvpd.protect('public.docs')`,
  );
  const app = await loginRole(t, db, 'app');
  const proxy = await loginRole(t, db, 'proxy');
  const url = new URL(db.url);
  const guard = (await contextPath(db)) === 'guard';
  const pathLine = guard
    ? 'ok   context path: guard (pgvpd_guard loaded: verified once per session, kept in settings no client can set)'
    : 'ok   context path: sql (pgvpd_guard not loaded: every statement verifies the context)';
  return { db, app, proxy, upstream: `${url.hostname}:${url.port}`, pathLine };
}

function okLines(good: Good): string[] {
  return [
    `ok   upstream reachable ${good.upstream}`,
    `ok   pgvpd SQL installed, version ${version}`,
    `ok   application roles safe: app_user, ${good.app.name}`,
    `ok   control role ${good.proxy.name} can issue context`,
    'skip API login is a member of pgvpd_api: no admin_port configured',
    'ok   every table with a tenant column is protected (1 protected)',
    good.pathLine,
    'ok   tenant confinement: activity, large_objects, signals confined',
  ];
}

const text = (lines: string[]): string => lines.map((line) => `${line}\n`).join('');

/** pgvpd(...args) with PGVPD_ADMIN_CONTROL_URL set to url (as serve reads it), then unset. */
async function withAdminControlUrl(url: string, ...args: string[]): Promise<CliResult> {
  process.env.PGVPD_ADMIN_CONTROL_URL = url;
  try {
    return await pgvpd(...args);
  } finally {
    Reflect.deleteProperty(process.env, 'PGVPD_ADMIN_CONTROL_URL');
  }
}

t.test('passes every check on a good database and exits 0', async (t) => {
  const good = await goodDatabase(t);
  t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.proxy.url), {
    code: 0,
    out: text(okLines(good)),
    err: '',
  });
});

t.test('skips the control check when no control_url is configured', async (t) => {
  const good = await goodDatabase(t);
  const lines = okLines(good);
  lines[3] = 'skip control role can issue context: no control_url configured';
  t.same(await pgvpd('doctor', '--db', good.db.url), { code: 0, out: text(lines), err: '' });
});

t.test('fails when an application role has BYPASSRLS', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query(`alter role ${good.app.name} bypassrls`);
  const lines = okLines(good);
  lines[2] = `FAIL application role ${good.app.name} has BYPASSRLS — fix: ALTER ROLE ${good.app.name} NOBYPASSRLS`;
  t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.proxy.url), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
});

t.test('fails when an application role is a member of pgvpd_admin', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query(`grant pgvpd_admin to ${good.app.name}`);
  const result = await pgvpd('doctor', '--db', good.db.url);
  t.equal(result.code, 1);
  t.match(
    result.out,
    `\nFAIL application role ${good.app.name} is a member of pgvpd_admin — fix: REVOKE pgvpd_admin FROM ${good.app.name}\n`,
  );
});

t.test('fails when an application role is a member of pgvpd_api', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query(`grant pgvpd_api to ${good.app.name}`);
  const result = await pgvpd('doctor', '--db', good.db.url);
  t.equal(result.code, 1);
  t.match(
    result.out,
    `\nFAIL application role ${good.app.name} is a member of pgvpd_api — fix: REVOKE pgvpd_api FROM ${good.app.name}\n`,
  );
});

t.test('fails when an application role inherits from a BYPASSRLS role', async (t) => {
  const good = await goodDatabase(t);
  const boss = `${good.app.name}_boss`;
  await good.db.query(`create role ${boss} nologin bypassrls; grant ${boss} to ${good.app.name}`);
  t.teardown(() => good.db.query(`drop role ${boss}`));
  const result = await pgvpd('doctor', '--db', good.db.url);
  t.equal(result.code, 1);
  t.match(
    result.out,
    `\nFAIL application role ${good.app.name} is a member of ${boss}, which is BYPASSRLS — fix: REVOKE ${boss} FROM ${good.app.name}\n`,
  );
});

t.test('fails when a table with a tenant column is not protected, naming it', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query('create table public.invoices (id int, org_id uuid)');
  const lines = okLines(good);
  lines[5] =
    'FAIL table public.invoices has tenant column org_id and is not protected — fix: pgvpd protect public.invoices org_id';
  t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.proxy.url), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
});

t.test('fails when a protected table has row level security turned off', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query('alter table public.docs disable row level security');
  const result = await pgvpd('doctor', '--db', good.db.url);
  t.equal(result.code, 1);
  t.match(
    result.out,
    '\nFAIL table public.docs has a pgvpd policy but row level security is disabled — fix: pgvpd protect public.docs tenant_id\n',
  );
});

t.test('fails when the upstream port is closed, from a flag or from the config file', async (t) => {
  const good = await goodDatabase(t);
  const port = await closedPort();
  const lines = okLines(good);
  lines[0] = `FAIL upstream unreachable 127.0.0.1:${port} (connect ECONNREFUSED 127.0.0.1:${port}) — fix: start PostgreSQL there, or set upstream_host and upstream_port`;
  const expected = { code: 1, out: text([...lines, '1 check failed']), err: '' };
  const common = ['doctor', '--db', good.db.url, '--control-url', good.proxy.url];

  t.same(
    await pgvpd(...common, '--upstream-host', '127.0.0.1', '--upstream-port', String(port)),
    expected,
    'flags',
  );

  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-doctor-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const conf = join(dir, 'pgvpd.conf');
  writeFileSync(
    conf,
    `# the proxy's upstream\nupstream_host = 127.0.0.1\nupstream_port = ${port}\n`,
  );
  t.same(await pgvpd(...common, '--config', conf), expected, 'config file');
});

t.test('fails when the control role may not issue context', async (t) => {
  const good = await goodDatabase(t);
  const lines = okLines(good);
  lines[3] = `FAIL control role ${good.app.name} cannot execute pgvpd.issue_context(integer,text,text,jsonb) — fix: GRANT pgvpd_proxy TO ${good.app.name}`;
  t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.app.url), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
});

t.test('with admin_port, passes when the API login is a member of pgvpd_api', async (t) => {
  const good = await goodDatabase(t);
  await good.db.query(`grant pgvpd_api to ${good.proxy.name}`);
  const lines = okLines(good);
  lines[4] = `ok   API login ${good.proxy.name} (control_url) is a member of pgvpd_api`;
  const args = ['doctor', '--db', good.db.url, '--control-url', good.proxy.url];
  t.same(await pgvpd(...args, '--admin-port', '8080'), { code: 0, out: text(lines), err: '' });
  const api = await loginRole(t, good.db, 'admin');
  await good.db.query(`grant pgvpd_api to ${api.name}`);
  lines[4] = `ok   API login ${api.name} (admin_control_url) is a member of pgvpd_api`;
  t.same(await withAdminControlUrl(api.url, ...args, '--admin-port', '8080'), {
    code: 0,
    out: text(lines),
    err: '',
  });
});

t.test('with admin_port, fails when the API login is not a member of pgvpd_api', async (t) => {
  const good = await goodDatabase(t);
  const lines = okLines(good);
  lines[4] = `FAIL API login ${good.proxy.name} (control_url) is not a member of pgvpd_api — fix: GRANT pgvpd_api TO ${good.proxy.name}`;
  const args = ['doctor', '--db', good.db.url, '--control-url', good.proxy.url];
  t.same(await pgvpd(...args, '--admin-port', '0'), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
  // A member that does not inherit pgvpd_api's privileges cannot use them either.
  const noinherit = `pgvpd_api_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('base64url');
  await good.db.query(
    `create role ${noinherit} login password '${password}' noinherit in role pgvpd_api`,
  );
  t.teardown(() => good.db.query(`drop role if exists ${noinherit}`).catch(() => undefined));
  lines[4] = `FAIL API login ${noinherit} (admin_control_url) is a member of pgvpd_api but does not inherit its privileges — fix: ALTER ROLE ${noinherit} INHERIT`;
  t.same(
    await withAdminControlUrl(good.db.urlFor(noinherit, password), ...args, '--admin-port', '0'),
    {
      code: 1,
      out: text([...lines, '1 check failed']),
      err: '',
    },
  );
  const port = await closedPort();
  const nowhere = `postgres://x@127.0.0.1:${port}/y`;
  lines[4] = `FAIL API login (admin_control_url) connection failed: connect ECONNREFUSED 127.0.0.1:${port} — fix: check admin_control_url`;
  t.same(await withAdminControlUrl(nowhere, ...args, '--admin-port', '0'), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
  lines[3] = 'skip control role can issue context: no control_url configured';
  lines[4] =
    'FAIL admin_port is set but neither admin_control_url nor control_url is: the HTTP control plane has no database login — fix: set admin_control_url to a login that is a member of pgvpd_api';
  t.same(await pgvpd('doctor', '--db', good.db.url, '--admin-port', '0'), {
    code: 1,
    out: text([...lines, '1 check failed']),
    err: '',
  });
});

t.test('fails when pgvpd is not installed and skips the checks that need it', async (t) => {
  const db = await createTestDatabase(t);
  const url = new URL(db.url);
  t.same(await pgvpd('doctor', '--db', db.url), {
    code: 1,
    out: text([
      `ok   upstream reachable ${url.hostname}:${url.port}`,
      'FAIL pgvpd SQL not installed — fix: pgvpd setup',
      'skip application roles safe: pgvpd SQL not installed',
      'skip control role can issue context: no control_url configured',
      'skip API login is a member of pgvpd_api: no admin_port configured',
      'skip tables protected: pgvpd SQL not installed',
      'skip context path: pgvpd SQL not installed',
      'skip tenant confinement: pgvpd SQL not installed',
      '1 check failed',
    ]),
    err: '',
  });
});

t.test(
  'fails when tenant confinement is open although wanted, and reports an opening by choice',
  async (t) => {
    const good = await goodDatabase(t);
    await good.db.query(
      'grant execute on function pg_catalog.pg_cancel_backend(integer) to public',
    );
    const lines = okLines(good);
    lines[lines.length - 1] =
      'FAIL tenant confinement open: signals (tenants sharing a role reach each other) — fix: select pgvpd.confine(), as a superuser';
    t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.proxy.url), {
      code: 1,
      out: text([...lines, '1 check failed']),
      err: '',
    });
    await good.db.query(`select pgvpd.unconfine('signals')`);
    lines[lines.length - 1] =
      'ok   tenant confinement: activity, large_objects confined; signals opened with pgvpd.unconfine';
    t.same(await pgvpd('doctor', '--db', good.db.url, '--control-url', good.proxy.url), {
      code: 0,
      out: text(lines),
      err: '',
    });
  },
);

t.test('fails on every check that needs the database when it is unreachable', async (t) => {
  const port = await closedPort();
  const refused = `connect ECONNREFUSED 127.0.0.1:${port}`;
  t.same(await pgvpd('doctor', '--db', `postgres://postgres@127.0.0.1:${port}/nowhere`), {
    code: 1,
    out: text([
      `FAIL upstream unreachable 127.0.0.1:${port} (${refused}) — fix: start PostgreSQL there, or set upstream_host and upstream_port`,
      `FAIL database unreachable: ${refused} — fix: check --db or DATABASE_URL`,
      'skip application roles safe: no database connection',
      'skip control role can issue context: no control_url configured',
      'skip API login is a member of pgvpd_api: no admin_port configured',
      'skip tables protected: no database connection',
      'skip context path: no database connection',
      'skip tenant confinement: no database connection',
      '2 checks failed',
    ]),
    err: '',
  });
});

t.test('rejects a bad config file with its key and exit code 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-doctor-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const conf = join(dir, 'pgvpd.conf');
  writeFileSync(conf, 'upstream_port = nope\n');
  t.same(await pgvpd('doctor', '--db', 'postgres://x@127.0.0.1/y', '--config', conf), {
    code: 1,
    out: '',
    err: `error: config file ${conf}: upstream_port must be a port number, got "nope"\n`,
  });
});
