// pgvpd lint: "no findings" on a clean database; an error finding makes the exit code 1, a
// warning alone does not.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd, loginRole } from '../support/pgvpd.js';
import { pgvpd } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const app = await loginRole(t, db, 'app');
// Clean: the key includes the tenant column, every registered role holds what protect grants
// (role_missing_grants), and no tenant role may lock docs without a lock_timeout of its own
// (lock_without_timeout on the SQL path; app_user, shared by every test, gets one only in this
// database).
await db.query(`
  create table public.docs (id int, tenant_id text not null, primary key (tenant_id, id));
  select pgvpd.protect('public.docs');
  alter role app_user in database "${db.name}" set lock_timeout = '5s';
  alter role ${app.name} set lock_timeout = '5s';
`);

t.test('prints "no findings" and exits 0 on a clean database', async (t) => {
  t.same(await pgvpd('lint', '--db', db.url), { code: 0, out: 'no findings\n', err: '' });
  t.same(await pgvpd('lint', '--json', '--db', db.url), { code: 0, out: '[]\n', err: '' });
});

t.test('an unprotected tenant table is an error finding and exit code 1', async (t) => {
  await db.query(`create table public.invoices (id int, org_id uuid);
                  grant select on public.invoices to ${app.name}`);
  t.teardown(() => db.query('drop table public.invoices'));

  const result = await pgvpd('lint', '--db', db.url);
  t.equal(result.code, 1);
  t.equal(result.err, '');
  const lines = result.out.split('\n');
  t.match(lines[0], /^severity {2}check_name {16}object {11}detail +fix$/);
  t.match(
    lines[2],
    /^error {5}unprotected_tenant_table {2}public\.invoices {2}public\.invoices has tenant column org_id/,
  );
  t.match(lines[2], /select pgvpd\.protect\('public\.invoices', 'org_id'\)$/);
  t.equal(lines[3], '1 finding: 1 error, 0 warnings');

  const json = await pgvpd('lint', '--json', '--db', db.url);
  t.equal(json.code, 1, '--json exits 1 as well');
  t.same(
    (JSON.parse(json.out) as { severity: string; check_name: string; object: string }[]).map(
      ({ severity, check_name, object }) => ({ severity, check_name, object }),
    ),
    [{ severity: 'error', check_name: 'unprotected_tenant_table', object: 'public.invoices' }],
  );
});

t.test('a warning alone is printed but exits 0', async (t) => {
  await db.query('alter table public.docs no force row level security');
  t.teardown(() => db.query('alter table public.docs force row level security'));

  const result = await pgvpd('lint', '--db', db.url);
  t.equal(result.code, 0);
  const lines = result.out.split('\n');
  t.match(lines[2], /^warning {3}rls_not_forced {2}public\.docs {2}/);
  t.equal(lines[3], '1 finding: 0 errors, 1 warning');
});
