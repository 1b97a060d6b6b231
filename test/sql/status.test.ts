// pgvpd.status(): the before/after story, and OIDs rather than names.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);

async function status() {
  const { rows } = await db.query(
    `select table_oid::text as "table", tenant_column, rls_enabled, rls_forced, pgvpd_policy, verdict from pgvpd.status()`,
  );
  return rows;
}

t.test('reports an unprotected table, then the same table protected', async (t) => {
  await db.query(`create table public.orders (id int, tenant_id text)`);
  t.same(await status(), [
    { table: 'orders', tenant_column: 'tenant_id', rls_enabled: false, rls_forced: false, pgvpd_policy: false, verdict: 'unprotected' },
  ]);
  await db.query(`select pgvpd.protect('public.orders')`);
  t.same(await status(), [
    { table: 'orders', tenant_column: 'tenant_id', rls_enabled: true, rls_forced: true, pgvpd_policy: true, verdict: 'protected' },
  ]);
  t.same((await db.query(`select verdict from pgvpd_status()`)).rows, [{ verdict: 'protected' }], 'the compatibility name agrees');
});

t.test('one row per table in every user schema, told apart by OID', async (t) => {
  await db.query(`create schema other; create table other.orders (id int, org_id uuid); create table other."Odd ""Name""" (id int)`);
  await db.query(`alter table other.orders enable row level security`);
  const rows = await status();
  t.same(
    rows.map((r) => [r.table, r.verdict, r.tenant_column]),
    [
      ['other."Odd ""Name"""', 'no tenant column', null],
      ['other.orders', 'unprotected', 'org_id'],
      ['orders', 'protected', 'tenant_id'],
    ],
  );
  await db.query(`select pgvpd.protect('other.orders', 'org_id'); alter table other.orders no force row level security`);
  t.equal((await status()).find((r) => r.table === 'other.orders')?.verdict, 'not forced');
  t.equal((await status()).find((r) => r.table === 'orders')?.verdict, 'protected', 'the table of the same name elsewhere is unaffected');
});

t.test('pgvpd’s own tables are not listed', async (t) => {
  const rows = await status();
  t.notOk(rows.some((r) => String(r.table).startsWith('pgvpd')), 'no pgvpd or pgvpd_private table');
});
