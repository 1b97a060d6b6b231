// pgvpd setup: graphile-migrate's migrations applied through the CLI, on a fresh database, again,
// and over SQL that was installed with psql -f sql/setup.sql.
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { installPgvpd } from '../support/pgvpd.js';
import { closedPort, pgvpd } from './run-cli.js';

const { version } = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string };

// Every committed migration, in order: what a first `setup` must run.
const committed = readdirSync(new URL('../../sql/migrations/committed/', import.meta.url))
  .filter((file) => file.endsWith('.sql'))
  .sort();
/** The line setup ends with: the context path it chose for the run's server. */
async function pathLine(db: TestDatabase): Promise<string> {
  const { rows } = await db.query<{ loaded: boolean }>(
    `select exists (select from pg_settings where name = 'pgvpd.guard' and context = 'internal') as loaded`,
  );
  return rows[0]!.loaded ? guardLine : sqlLine;
}
const guardLine =
  'context path: guard (the pgvpd_guard module is loaded: verified once per session, read as settings no client can set)\n';
const sqlLine =
  'context path: sql (the pgvpd_guard module is not loaded: every statement verifies the context)\n';

const ran =
  committed.map((file) => `graphile-migrate: Running migration '${file}'\n`).join('') +
  `graphile-migrate: ${String(committed.length)} committed migrations executed\n`;

async function count(db: TestDatabase, sql: string): Promise<number> {
  return (await db.query<{ n: number }>(`select (${sql})::int as n`)).rows[0]!.n;
}

t.test('installs on a fresh database, then reports it up to date the second time', async (t) => {
  const db = await createTestDatabase(t);
  const installed = `pgvpd ${version} is installed in database ${db.name}\n` + (await pathLine(db));

  t.same(await pgvpd('setup', '--db', db.url), { code: 0, out: ran + installed, err: '' });
  t.same(await pgvpd('setup', '--db', db.url), {
    code: 0,
    out: 'graphile-migrate: Already up to date\n' + installed,
    err: '',
  });
  t.equal(await count(db, 'select count(*) from graphile_migrate.migrations'), committed.length);
  t.equal(
    await count(db, 'select count(*) from pgvpd_private.signing_key where retired_at is null'),
    1,
    'one active signing key after two runs',
  );
  t.same((await db.query('select * from pgvpd.lint()')).rows, [], 'lint is clean');
});

t.test('migrates a database installed with setup.sql and keeps its protected tables', async (t) => {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  await db.query(
    `create table public.docs (id int, tenant_id text); select pgvpd.protect('public.docs')`,
  );
  const key = await db.query('select kid from pgvpd_private.signing_key');

  t.same(await pgvpd('setup', '--db', db.url), {
    code: 0,
    out: ran + `pgvpd ${version} is installed in database ${db.name}\n` + (await pathLine(db)),
    err: '',
  });
  t.same((await db.query('select kid from pgvpd_private.signing_key')).rows, key.rows, 'same key');
  t.same(
    (await db.query('select schema_name, table_name, verdict from pgvpd.status()')).rows,
    [{ schema_name: 'public', table_name: 'docs', verdict: 'protected' }],
    'the table protected before stays protected',
  );
});

t.test('reports an unreachable database and exits 1', async (t) => {
  const port = await closedPort();
  const result = await pgvpd('setup', '--db', `postgres://postgres@127.0.0.1:${port}/nowhere`);
  t.equal(result.code, 1);
  t.equal(result.out, '');
  t.match(result.err, new RegExp(`^error: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\n`));
});
