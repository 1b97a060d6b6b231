// pgvpd.org_purge_rows: deleting an org's rows from every protected table, then the org, only
// with the org's database name as confirmation.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const adminRole = await loginRole(t, db, 'admin');
const admin = await adminRole.connect();
t.teardown(() => admin.end());

async function createOrg(name: string): Promise<string> {
  return (await admin.query<{ id: string }>('select pgvpd.org_create($1, $1) as id', [name]))
    .rows[0]!.id;
}

const doomed = await createOrg('doomed');
const survivor = await createOrg('survivor');

// a_parent sorts before b_child, which references it: the first delete of a_parent fails on the
// foreign key and must be retried after b_child. notes_uuid has a uuid tenant column; loose has a
// tenant column but no pgvpd policy, so it is not touched.
await db.query(`
  create table public.a_parent (id int primary key, tenant_id text not null);
  create table public.b_child (id int primary key, parent int references public.a_parent, tenant_id text not null);
  create table public.notes_uuid (id int, org_id uuid not null);
  create table public.loose (id int, tenant_id text);
  insert into public.a_parent values (1, '${doomed}'), (2, '${survivor}');
  insert into public.b_child values (1, 1, '${doomed}'), (2, 2, '${survivor}'), (3, 1, '${doomed}');
  insert into public.notes_uuid values (1, '${doomed}'), (2, '${survivor}'), (3, '${doomed}');
  insert into public.loose values (1, '${doomed}');
  select pgvpd.protect('public.a_parent');
  select pgvpd.protect('public.b_child');
  select pgvpd.protect('public.notes_uuid', 'org_id');
  grant select, delete on public.a_parent, public.b_child, public.notes_uuid to ${adminRole.name};
`);

async function counts(): Promise<Record<string, number>> {
  const { rows } = await db.query<Record<string, number>>(`
    select (select count(*)::int from public.a_parent where tenant_id = '${doomed}') as parent,
           (select count(*)::int from public.b_child where tenant_id = '${doomed}') as child,
           (select count(*)::int from public.notes_uuid where org_id = '${doomed}') as notes,
           (select count(*)::int from public.loose) as loose,
           (select count(*)::int from public.a_parent where tenant_id = '${survivor}')
         + (select count(*)::int from public.b_child where tenant_id = '${survivor}')
         + (select count(*)::int from public.notes_uuid where org_id = '${survivor}') as survivor`);
  return rows[0]!;
}

t.test('refuses without the database name as confirmation and changes nothing', async (t) => {
  const before = await counts();
  for (const confirm of [null, '', 'DOOMED', 'survivor', doomed]) {
    let code = 'no error';
    let message = '';
    await admin
      .query('select * from pgvpd.org_purge_rows($1, $2)', [doomed, confirm])
      .catch((error: unknown) => ({ code, message } = error as { code: string; message: string }));
    t.same(
      { code, message },
      {
        code: '22023',
        message: `pgvpd: confirmation does not match the database name of org '${doomed}'`,
      },
      JSON.stringify(confirm),
    );
  }
  t.same(await counts(), before);
  t.equal((await admin.query('select * from pgvpd.orgs()')).rowCount, 2, 'the org is still there');
});

t.test('deletes the org rows from every protected table, then the org', async (t) => {
  const { rows } = await admin.query<{ table_name: string; rows_deleted: string }>(
    'select table_name::text, rows_deleted from pgvpd.org_purge_rows($1, $2)',
    [doomed, 'doomed'],
  );
  t.same(
    rows.map((r) => [r.table_name, Number(r.rows_deleted)]).sort(),
    [
      ['a_parent', 1],
      ['b_child', 2],
      ['notes_uuid', 2],
    ],
    'each table once, with its count',
  );
  t.same(await counts(), { parent: 0, child: 0, notes: 0, loose: 1, survivor: 3 });
  t.same(
    (await admin.query('select database_name from pgvpd.orgs()')).rows,
    [{ database_name: 'survivor' }],
    'the org is removed from the catalog',
  );
  const { tenant } = (await admin.query('select pgvpd.current_tenant_id() as tenant')).rows[0]!;
  t.equal(tenant, null, 'the session keeps no context of the purged org');
});

t.test('an unknown org is 42704', async (t) => {
  let code = 'no error';
  await admin
    .query('select * from pgvpd.org_purge_rows($1, $2)', [doomed, 'doomed'])
    .catch((error: unknown) => (code = (error as { code: string }).code));
  t.equal(code, '42704');
});
