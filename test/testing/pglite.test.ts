// pgvpd/testing in PGlite: the SQL core installs, tenants are isolated, and the canaries bite.
import t from 'tap';
import { asTenant, createPgvpdTestDb } from '../../testing/pglite.js';

const db = await createPgvpdTestDb();
t.teardown(() => db.close());
await db.exec(`
  create table public.projects (id int, tenant_id text not null, name text, primary key (tenant_id, id));
  insert into public.projects values (1, 'acme', 'rocket'), (2, 'acme', 'anvil'), (3, 'globex', 'dome');
  select pgvpd.protect('public.projects');
  create role bypasser login bypassrls;
  grant select on public.projects to bypasser;
`);

const names = (rows: { name: string }[]) => rows.map((r) => r.name);

t.test('the canary: the callback runs as an unprivileged role with row_security on', async (t) => {
  const row = await asTenant(
    db,
    'acme',
    async (tx) =>
      (
        await tx.query<{ role: string; rolsuper: boolean; rolbypassrls: boolean }>(
          `select current_user as role, rolsuper, rolbypassrls from pg_roles where rolname = current_user`,
        )
      ).rows[0],
  );
  t.same(row, { role: 'app_user', rolsuper: false, rolbypassrls: false });
});

t.test(
  'the canary: RLS fires — each tenant sees its rows only, and the superuser sees all',
  async (t) => {
    const acme = await asTenant(db, 'acme', async (tx) =>
      names((await tx.query<{ name: string }>('select name from projects order by id')).rows),
    );
    const globex = await asTenant(db, 'globex', async (tx) =>
      names((await tx.query<{ name: string }>('select name from projects order by id')).rows),
    );
    t.same(acme, ['rocket', 'anvil']);
    t.same(globex, ['dome']);
    const all = await db.query<{ n: number }>('select count(*)::int as n from projects');
    t.equal(
      all.rows[0]?.n,
      3,
      'outside asTenant, as the PGlite superuser, every row is there: the filter above was RLS',
    );
  },
);

t.test('writes are checked and rolled back', async (t) => {
  const err = await asTenant(db, 'acme', async (tx) => {
    await tx.query(`insert into projects values (4, 'acme', 'new')`);
    t.equal(
      (await tx.query('select * from projects')).rows.length,
      3,
      'the own insert is visible inside',
    );
    return tx.query(`insert into projects values (5, 'globex', 'planted')`).then(
      () => 'no error',
      (e: unknown) => (e as { code?: string }).code,
    );
  }).catch((e: unknown) => (e as { code?: string }).code);
  t.equal(err, '42501', 'a row for another tenant fails WITH CHECK');
  const count = await db.query<{ n: number }>('select count(*)::int as n from projects');
  t.equal(count.rows[0]?.n, 3, 'nothing stays behind');
});

t.test('no context means no rows, also in PGlite', async (t) => {
  await db.exec('begin; set local role app_user;');
  const rows = await db.query('select * from projects');
  await db.exec('rollback');
  t.equal(rows.rows.length, 0);
});

t.test('user and extra values reach pgvpd.context', async (t) => {
  const row = await asTenant(
    db,
    'acme',
    async (tx) =>
      (
        await tx.query(
          `select pgvpd.context('user') as u, pgvpd.context('plan') as p, current_tenant_id() as t`,
        )
      ).rows[0],
    { user: 'alice', values: { plan: 'pro' } },
  );
  t.same(row, { u: 'alice', p: 'pro', t: 'acme' });
});

t.test('refuses a role that bypasses RLS', async (t) => {
  await t.rejects(
    asTenant(db, 'acme', () => Promise.resolve('ran'), { role: 'bypasser' }),
    {
      message:
        'pgvpd/testing: refusing to test policies: role bypasser has BYPASSRLS: RLS would not apply',
    },
  );
  await t.rejects(
    asTenant(db, 'acme', () => Promise.resolve('ran'), { role: 'postgres' }),
    {
      message:
        'pgvpd/testing: refusing to test policies: role postgres is a superuser: RLS would not apply',
    },
  );
});

t.test('lint and status work in PGlite', async (t) => {
  // On the SQL path (PGlite has no guard module) a tenant role needs a lock_timeout of its own.
  t.same((await db.query('select check_name, object from pgvpd.lint()')).rows, [
    { check_name: 'lock_without_timeout', object: 'app_user' },
  ]);
  await db.exec(`alter role app_user set lock_timeout = '5s'`);
  t.same(
    (await db.query('select check_name from pgvpd.lint()')).rows,
    [{ check_name: 'app_role_privileged' }].slice(0, 0),
  );
  t.same(
    (await db.query(`select verdict from pgvpd.status() where table_name = 'projects'`)).rows,
    [{ verdict: 'protected' }],
  );
});
