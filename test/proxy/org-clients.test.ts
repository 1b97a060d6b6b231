// Real clients through an org-mode proxy against a real PostgreSQL: psql and pgbench (libpq,
// spawned asynchronously because the proxy runs in this process), node-postgres (both protocols,
// prepared statements, a transaction) and postgres.js. The database name picks the org, the proxy
// runs SCRAM itself, and each client sees only its org's rows of public.docs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import postgres from 'postgres';
import t from 'tap';
import { sqlstate } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { runTool, type ToolResult } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { failure, openClient, seen } from './org-support.js';

const psqlBin = '/usr/bin/psql';
const pgbenchBin = '/usr/bin/pgbench';

const f = await orgFixture(t);
const logins = {
  acme: { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' },
  beta: { database: 'beta-db', user: 'alice', password: 'alice-at-beta' },
} as const;
type Org = keyof typeof logins;

/** libpq conninfo through the proxy, without the password (PGPASSWORD carries it). */
function conninfo(database: string, user: string): string {
  return `host=127.0.0.1 port=${String(f.proxy.port)} dbname=${database} user=${user}`;
}

function psql(org: Org, commands: string[], password: string = logins[org].password) {
  return runTool(
    psqlBin,
    [
      '-X',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      ...commands.flatMap((c) => ['-c', c]),
      conninfo(logins[org].database, logins[org].user),
    ],
    { PGPASSWORD: password },
  );
}

function pgbench(org: Org, args: string[]): Promise<ToolResult> {
  return runTool(
    pgbenchBin,
    [...args, conninfo(logins[org].database, logins[org].user)],
    { PGPASSWORD: logins[org].password },
    60_000,
  );
}

function connect(t: TestLike, org: Org, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  return openClient(t, { port: f.proxy.port, ...logins[org] }, extra);
}

function scratchDir(t: TestLike): string {
  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-org-clients-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

const bodies = "select coalesce(string_agg(body, ',' order by body), 'none') from public.docs";

t.test('psql: dbname names the org, and alice sees only that org', async (t) => {
  for (const [org, expected] of [
    ['acme', 'a1,a2'],
    ['beta', 'b1,b2,b3'],
  ] as const) {
    const result = await psql(org, [
      bodies,
      'select pgvpd.current_tenant_id()',
      "select pgvpd.context('user')",
    ]);
    t.equal(result.stderr, '', `${org}: no error output`);
    t.equal(result.code, 0, `${org}: exit code 0`);
    t.equal(result.stdout, `${expected}\n${f.orgs[org]}\nalice\n`, `${org}: sees ${expected}`);
  }
  // COPY TO STDOUT travels through the lent session too, filtered the same way.
  const copied = await psql('beta', [
    'copy (select body from public.docs order by body) to stdout',
  ]);
  t.equal(copied.code, 0, copied.stderr);
  t.equal(copied.stdout, 'b1\nb2\nb3\n');
});

t.test('psql shows the proxy’s refusals: wrong password, unknown org', async (t) => {
  // acme's alice with beta's alice's password.
  const wrong = await psql('acme', ['select 1'], logins.beta.password);
  t.equal(wrong.code, 2);
  t.equal(wrong.stdout, '');
  t.match(wrong.stderr, 'FATAL:  password authentication failed for user "alice"');
  const unknown = await runTool(psqlBin, ['-X', '-c', 'select 1', conninfo('no-such-org', 'x')], {
    PGPASSWORD: 'x',
  });
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, 'FATAL:  database "no-such-org" does not exist');
});

t.test('pgbench -S runs through the org-mode pool in simple and prepared mode', async (t) => {
  // pgbench's tables, made by the superuser in the org's (shared) database. They have no org_id,
  // so nothing protects them: this is throughput through the pool, not isolation.
  const init = await runTool(pgbenchBin, ['-i', '-s', '1', '-q', '-I', 'dtGvp', f.db.url]);
  t.equal(init.code, 0, `pgbench -i: ${init.stderr}`);
  await f.db.query(
    `grant select on pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history to ${f.connectAs}`,
  );
  for (const mode of ['simple', 'prepared']) {
    const run = await pgbench('acme', ['-n', '-S', '-c', '4', '-j', '2', '-t', '100', '-M', mode]);
    t.equal(run.code, 0, `-M ${mode}: ${run.stderr}`);
    t.match(run.stdout, `query mode: ${mode}\n`);
    t.match(run.stdout, '\nnumber of transactions actually processed: 400/400\n', `-M ${mode}`);
    t.match(run.stdout, '\nnumber of failed transactions: 0 (0.000%)\n');
  }
});

t.test('a pgbench script checks the org’s view in every transaction', async (t) => {
  const script = join(scratchDir(t), 'org.sql');
  // A transaction that sees anything but acme's two rows, or another tenant or user, divides by
  // zero, and pgbench fails.
  writeFileSync(
    script,
    [
      `select count(*) as n, count(*) filter (where org_id <> '${f.orgs.acme}') as foreign_rows, coalesce(pgvpd.current_tenant_id(), '') = '${f.orgs.acme}' and coalesce(pgvpd.context('user'), '') = 'alice' as is_acme from public.docs \\gset`,
      '\\if :foreign_rows != 0 or :n != 2 or not :is_acme',
      'select 1 / 0;',
      '\\endif',
      '',
    ].join('\n'),
  );
  for (const mode of ['simple', 'prepared']) {
    const run = await pgbench('acme', [
      '-n',
      '-f',
      script,
      '-c',
      '4',
      '-j',
      '2',
      '-t',
      '100',
      '-M',
      mode,
    ]);
    t.equal(run.code, 0, `-M ${mode}: ${run.stderr}`);
    t.match(run.stdout, '\nnumber of transactions actually processed: 400/400\n');
  }
  // The same script as beta's alice fails at once: the check does detect another org's view.
  const beta = await pgbench('beta', ['-n', '-f', script, '-c', '1', '-t', '5']);
  t.equal(beta.code, 2);
  t.match(beta.stderr, 'division by zero');
});

t.test('pg: extended protocol with parameters sees only the own org', async (t) => {
  const acme = await connect(t, 'acme');
  const byOrg = 'select body from public.docs where org_id = $1 order by body';
  t.same((await acme.query(byOrg, [f.orgs.acme])).rows, [{ body: 'a1' }, { body: 'a2' }]);
  t.same((await acme.query(byOrg, [f.orgs.beta])).rows, [], 'beta rows stay invisible');
  const typed = await acme.query<{ n: number; s: string; tenant: string }>(
    'select $1::int + 1 as n, $2::text as s, pgvpd.current_tenant_id() as tenant',
    [41, 'ünïcödé'],
  );
  t.same(typed.rows, [{ n: 42, s: 'ünïcödé', tenant: f.orgs.acme }]);
  // A named prepared statement, parsed once and bound again.
  const statement = (body: string): pg.QueryConfig => ({
    name: 'doc_by_body',
    text: 'select body from public.docs where body = $1',
    values: [body],
  });
  t.same((await acme.query(statement('a2'))).rows, [{ body: 'a2' }]);
  t.same((await acme.query(statement('b1'))).rows, [], 'a beta row is not found');
  // Several statements in one simple query.
  const results = (await acme.query(
    'select 1 as one; select count(*)::int as n from public.docs',
  )) as unknown as pg.QueryResult[];
  t.same(
    results.map((r) => r.rows),
    [[{ one: 1 }], [{ n: 2 }]],
  );
  const beta = await connect(t, 'beta');
  t.same(await seen(beta), { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] });
});

t.test('pg: a transaction refuses another org’s row with 42501 and rolls back', async (t) => {
  const acme = await connect(t, 'acme');
  const insert = 'insert into public.docs (org_id, body) values ($1, $2)';
  await acme.query('begin');
  await acme.query(insert, [f.orgs.acme, 'in tx']);
  t.same(await seen(acme), { tenant: f.orgs.acme, rows: ['a1', 'a2', 'in tx'] });
  t.equal(await sqlstate(acme.query(insert, [f.orgs.beta, 'sneaky'])), '42501');
  t.equal(await sqlstate(acme.query('select 1')), '25P02', 'the transaction is aborted');
  await acme.query('rollback');
  t.same(await seen(acme), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
  await acme.query('begin');
  await acme.query(insert, [f.orgs.acme, 'kept']);
  await acme.query('commit');
  t.same(await seen(acme), { tenant: f.orgs.acme, rows: ['a1', 'a2', 'kept'] });
  const all = await f.db.query<{ bodies: string[] }>(
    'select array_agg(body order by body) as bodies from public.docs',
  );
  t.same(all.rows[0]!.bodies, ['a1', 'a2', 'b1', 'b2', 'b3', 'kept'], 'no trace of the others');
  await f.db.query("delete from public.docs where body = 'kept'");
});

t.test('pg: the client’s startup parameters reach its session, and only its', async (t) => {
  const first = await connect(t, 'acme', { application_name: 'org-clients-first' });
  const setting = async (client: pg.Client): Promise<string> =>
    (await client.query<{ v: string }>("select current_setting('application_name') as v")).rows[0]!
      .v;
  t.equal(await setting(first), 'org-clients-first');
  await first.end();
  const second = await connect(t, 'beta');
  t.not(await setting(second), 'org-clients-first', 'not inherited from the previous client');
  t.same(await seen(second), { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] });
});

t.test('pg: refusals arrive as the proxy’s FATAL errors', async (t) => {
  t.same(await failure(connect(t, 'acme', { password: 'nope' })), {
    severity: 'FATAL',
    code: '28P01',
    message: 'password authentication failed for user "alice"',
    hint: undefined,
  });
});

function sqlFor(
  t: TestLike,
  org: Org,
  options: postgres.Options<Record<string, postgres.PostgresType>> = {},
): postgres.Sql {
  const sql = postgres({
    host: '127.0.0.1',
    port: f.proxy.port,
    database: logins[org].database,
    username: logins[org].user,
    password: logins[org].password,
    max: 3,
    onnotice: () => undefined,
    ...options,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

t.test('postgres.js: each org sees only its rows, with parameters and in parallel', async (t) => {
  const acme = sqlFor(t, 'acme');
  const beta = sqlFor(t, 'beta');
  const view = (sql: postgres.Sql) =>
    sql<[{ tenant: string; rows: string[] }]>`
      select pgvpd.current_tenant_id() as tenant,
             (select array_agg(body order by body) from public.docs) as rows`;
  t.same([...(await view(acme))], [{ tenant: f.orgs.acme, rows: ['a1', 'a2'] }]);
  t.same([...(await view(beta))], [{ tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] }]);
  const byOrg = (sql: postgres.Sql, org: string) =>
    sql<{ body: string }[]>`select body from public.docs where org_id = ${org} order by body`;
  t.same([...(await byOrg(acme, f.orgs.acme))], [{ body: 'a1' }, { body: 'a2' }]);
  t.same([...(await byOrg(acme, f.orgs.beta))], [], 'a parameter cannot reach beta’s rows');
  // Several connections at once, each with its own pooled session and context.
  const parallel = await Promise.all(
    Array.from({ length: 9 }, (_, i) => {
      const sql = i % 3 === 0 ? beta : acme;
      return sql<[{ tenant: string; n: number }]>`
        select pgvpd.current_tenant_id() as tenant, count(*)::int as n, pg_sleep(0.05)::text
          from public.docs`;
    }),
  );
  t.same(
    parallel.map(([row]) => ({ tenant: row.tenant, n: row.n })),
    Array.from({ length: 9 }, (_, i) =>
      i % 3 === 0 ? { tenant: f.orgs.beta, n: 3 } : { tenant: f.orgs.acme, n: 2 },
    ),
  );
});

t.test('postgres.js: sql.begin commits, a throw rolls back, 42501 for beta’s row', async (t) => {
  const acme = sqlFor(t, 'acme');
  const count = async (): Promise<number> =>
    (await acme<[{ n: number }]>`select count(*)::int as n from public.docs`)[0].n;
  const rolledBack = await sqlstate(
    acme.begin(async (sql) => {
      await sql`insert into public.docs (org_id, body) values (${f.orgs.acme}, 'pjs')`;
      const [{ n }] = await sql<[{ n: number }]>`select count(*)::int as n from public.docs`;
      t.equal(n, 3, 'the insert is visible inside the transaction');
      await sql`insert into public.docs (org_id, body) values (${f.orgs.beta}, 'sneaky')`;
    }),
  );
  t.equal(rolledBack, '42501', 'WITH CHECK refuses beta’s org_id');
  t.equal(await count(), 2, 'the whole transaction rolled back');
  await acme.begin(async (sql) => {
    await sql`insert into public.docs (org_id, body) values (${f.orgs.acme}, 'pjs-kept')`;
  });
  t.equal(await count(), 3);
  const owner = await f.db.query<{ org_id: string }>(
    "select org_id from public.docs where body = 'pjs-kept'",
  );
  t.same(owner.rows, [{ org_id: f.orgs.acme }]);
  await f.db.query("delete from public.docs where body = 'pjs-kept'");
});
