// pgvpd protect and pgvpd status: a table protected through the CLI shows as protected, in the
// table and in JSON; unknown tables and columns fail with PostgreSQL's own SQLSTATE.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd } from '../support/pgvpd.js';
import { pgvpd, withDatabaseUrl } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
await db.query(`
  create table public.docs (id int primary key, tenant_id text not null);
  create table public.lookup (id int primary key, label text);
  create schema "Sales";
  create table "Sales"."Deals" (id int, org_id uuid);
`);

t.test('status shows tables with a tenant column as unprotected before protect', async (t) => {
  t.same(await pgvpd('status', '--db', db.url), {
    code: 0,
    out: [
      'table            tenant_column  rls_enabled  rls_forced  pgvpd_policy  verdict',
      '---------------  -------------  -----------  ----------  ------------  ----------------',
      '"Sales"."Deals"  org_id         no           no          no            unprotected',
      'public.docs      tenant_id      no           no          no            unprotected',
      'public.lookup                   no           no          no            no tenant column',
      'tenant confinement: activity confined, large_objects confined, signals confined',
      '',
    ].join('\n'),
    err: '',
  });
});

t.test(
  'protect turns isolation on and says so, also for quoted names and another column',
  async (t) => {
    t.same(await pgvpd('protect', 'public.docs', '--db', db.url), {
      code: 0,
      out: 'public.docs protected on column tenant_id\n',
      err: '',
    });
    t.same(await pgvpd('protect', '"Sales"."Deals"', 'org_id', '--db', db.url), {
      code: 0,
      out: '"Sales"."Deals" protected on column org_id\n',
      err: '',
    });
  },
);

t.test('status then shows both tables protected', async (t) => {
  const result = await pgvpd('status', '--db', db.url);
  t.equal(result.code, 0);
  t.equal(
    result.out,
    [
      'table            tenant_column  rls_enabled  rls_forced  pgvpd_policy  verdict',
      '---------------  -------------  -----------  ----------  ------------  ----------------',
      '"Sales"."Deals"  org_id         yes          yes         yes           protected',
      'public.docs      tenant_id      yes          yes         yes           protected',
      'public.lookup                   no           no          no            no tenant column',
      'tenant confinement: activity confined, large_objects confined, signals confined',
      '',
    ].join('\n'),
  );
});

t.test('status --json prints the rows of pgvpd.status() as a JSON array', async (t) => {
  const result = await pgvpd('status', '--json', '--db', db.url);
  t.equal(result.code, 0);
  t.same(JSON.parse(result.out), [
    {
      table_oid: '"Sales"."Deals"',
      schema_name: 'Sales',
      table_name: 'Deals',
      tenant_column: 'org_id',
      rls_enabled: true,
      rls_forced: true,
      pgvpd_policy: true,
      verdict: 'protected',
    },
    {
      table_oid: 'public.docs',
      schema_name: 'public',
      table_name: 'docs',
      tenant_column: 'tenant_id',
      rls_enabled: true,
      rls_forced: true,
      pgvpd_policy: true,
      verdict: 'protected',
    },
    {
      table_oid: 'public.lookup',
      schema_name: 'public',
      table_name: 'lookup',
      tenant_column: null,
      rls_enabled: false,
      rls_forced: false,
      pgvpd_policy: false,
      verdict: 'no tenant column',
    },
  ]);
});

t.test('protect again is harmless', async (t) => {
  t.same(await pgvpd('protect', 'public.docs', '--db', db.url), {
    code: 0,
    out: 'public.docs protected on column tenant_id\n',
    err: '',
  });
});

t.test('protect of an unknown table fails with 42P01 and exit code 1', async (t) => {
  t.same(await pgvpd('protect', 'public.nope', '--db', db.url), {
    code: 1,
    out: '',
    err: 'error: relation "public.nope" does not exist (SQLSTATE 42P01)\n',
  });
});

t.test(
  'protect on a missing column fails with 42703 and the hint to name the column',
  async (t) => {
    t.same(await pgvpd('protect', 'public.lookup', '--db', db.url), {
      code: 1,
      out: '',
      err:
        'error: pgvpd: column tenant_id does not exist in table public.lookup (SQLSTATE 42703)\n' +
        "hint: pass the tenant column as the second argument: pgvpd.protect('schema.table', 'column')\n",
    });
  },
);

t.test('status reads DATABASE_URL when --db is not given', async (t) => {
  const result = await withDatabaseUrl(db.url, () => pgvpd('status', '--json'));
  t.equal(result.code, 0);
  t.equal((JSON.parse(result.out) as unknown[]).length, 3);
});

t.test('status says so when there are no tables', async (t) => {
  const empty = await createTestDatabase(t);
  await installPgvpd(empty);
  t.same(await pgvpd('status', '--db', empty.url), {
    code: 0,
    out: 'no tables\ntenant confinement: activity confined, large_objects confined, signals confined\n',
    err: '',
  });
  t.same(await pgvpd('status', '--json', '--db', empty.url), { code: 0, out: '[]\n', err: '' });
});

t.test('status on a database without pgvpd fails with 3F000 and says to run setup', async (t) => {
  const bare = await createTestDatabase(t);
  t.same(await pgvpd('status', '--db', bare.url), {
    code: 1,
    out: '',
    err:
      'error: schema "pgvpd" does not exist (SQLSTATE 3F000)\n' +
      'hint: is pgvpd installed in this database? Run pgvpd setup\n',
  });
});
