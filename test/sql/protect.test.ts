// pgvpd.protect / unprotect and the compatibility wrapper pgvpd_protect.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { giveContext, installPgvpd, loginRole, sqlstate } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const app = await loginRole(t, db, 'app');
const proxyRole = await loginRole(t, db, 'proxy');
const proxy = await proxyRole.connect();
t.teardown(() => proxy.end());

interface TableState {
  rls: boolean;
  forced: boolean;
  policies: string[];
  privileges: string[];
}

async function tableState(table: string): Promise<TableState> {
  const { rows } = await db.query<TableState>(
    `select c.relrowsecurity as rls, c.relforcerowsecurity as forced,
            array(select polname::text from pg_policy where polrelid = c.oid order by 1) as policies,
            array(select privilege_type::text from information_schema.role_table_grants g
                   where g.grantee = $2 and format('%I.%I', g.table_schema, g.table_name)::regclass = c.oid order by 1) as privileges
       from pg_class c where c.oid = $1::regclass`,
    [table, app.name],
  );
  return rows[0]!;
}

t.test('protect enables and forces RLS with one policy for all commands and grants the app role', async (t) => {
  await db.query(`create table public.plain (id int primary key, tenant_id text)`);
  t.same(await tableState('public.plain'), { rls: false, forced: false, policies: [], privileges: [] });
  await db.query(`select pgvpd.protect('public.plain')`);
  t.same(await tableState('public.plain'), {
    rls: true,
    forced: true,
    policies: ['pgvpd_tenant_isolation'],
    privileges: ['DELETE', 'INSERT', 'SELECT', 'UPDATE'],
  });
  const { rows } = await db.query(
    `select polcmd, polpermissive, pg_get_expr(polqual, polrelid) as using, pg_get_expr(polwithcheck, polrelid) as check
       from pg_policy where polrelid = 'public.plain'::regclass`,
  );
  t.same(rows[0], {
    polcmd: '*',
    polpermissive: true,
    using: '(tenant_id = ( SELECT pgvpd.current_tenant_id() AS current_tenant_id))',
    check: '(tenant_id = ( SELECT pgvpd.current_tenant_id() AS current_tenant_id))',
  });
});

t.test('running protect twice is harmless', async (t) => {
  await db.query(`create table public.twice (id serial primary key, tenant_id text)`);
  await db.query(`select pgvpd.protect('public.twice')`);
  const once = await tableState('public.twice');
  await db.query(`select pgvpd.protect('public.twice')`);
  t.same(await tableState('public.twice'), once);
  await db.query(`select pgvpd.unprotect('public.twice')`);
  t.same(await tableState('public.twice'), { rls: false, forced: false, policies: [], privileges: [] }, 'one unprotect undoes both');
});

t.test('works for schema-qualified, quoted names and non-text tenant columns', async (t) => {
  await db.query(`create schema "Sales Dept"; create table "Sales Dept"."Big Deals" (id int, "Org Id" uuid, amount int)`);
  await db.query(`insert into "Sales Dept"."Big Deals" values (1, '00000000-0000-0000-0000-00000000000a', 10), (2, '00000000-0000-0000-0000-00000000000b', 20)`);
  await db.query(`select pgvpd_protect('"Sales Dept"."Big Deals"', 'Org Id')`);
  t.equal((await tableState('"Sales Dept"."Big Deals"')).forced, true);
  await db.query(`grant usage on schema "Sales Dept" to ${app.name}`);
  const client = await app.connect();
  t.teardown(() => client.end());
  await giveContext(proxy, client, '00000000-0000-0000-0000-00000000000a');
  const { rows } = await client.query(`select id from "Sales Dept"."Big Deals"`);
  t.same(rows, [{ id: 1 }], 'the uuid tenant sees its row only');
});

t.test('a missing column is a clear 42703 error and changes nothing', async (t) => {
  await db.query(`create table public.nocol (id int)`);
  let message = '';
  const code = await sqlstate(
    db.query(`select pgvpd.protect('public.nocol', 'tenant_id')`).catch((e: unknown) => {
      message = e instanceof Error ? e.message : String(e);
      throw e;
    }),
  );
  t.equal(code, '42703');
  t.equal(message, 'pgvpd: column tenant_id does not exist in table public.nocol');
  t.same(await tableState('public.nocol'), { rls: false, forced: false, policies: [], privileges: [] });
  t.equal(await sqlstate(db.query(`select pgvpd.protect('public.no_such_table')`)), '42P01', 'an unknown table');
});

t.test('unprotect reverses exactly what protect did', async (t) => {
  await db.query(`create table public.prior (id int, tenant_id text)`);
  await db.query(`alter table public.prior enable row level security`);
  await db.query(`create policy own on public.prior using (true)`);
  await db.query(`grant select on public.prior to ${app.name}`);
  const before = await tableState('public.prior');
  await db.query(`select pgvpd.protect('public.prior')`);
  t.same((await tableState('public.prior')).policies, ['own', 'pgvpd_tenant_isolation']);
  await db.query(`select pgvpd.unprotect('public.prior')`);
  t.same(await tableState('public.prior'), before, 'RLS stays on, the own policy and the earlier SELECT grant stay');
  t.equal(
    (await db.query(`select pgvpd.unprotect('public.prior') as r`)).rows[0]!.r,
    'public.prior was not protected by pgvpd',
  );
});
