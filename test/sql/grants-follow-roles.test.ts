// Table privileges follow the tenant roles that need them (migration 000009): a role registered
// after pgvpd.protect() (an application role, or an org's connect_as role when a user is added)
// gets what protect grants on every protected table; a role no longer registered loses what pgvpd
// granted it; lint's role_missing_grants names a registered role that lacks any of it.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase } from '../support/postgres.js';
import {
  backendPid,
  connect,
  giveContext,
  installPgvpd,
  lintLines,
  lockWarnings,
  loginRole,
  scratchRole,
} from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const proxyRole = await loginRole(t, db, 'proxy');
const proxy = await proxyRole.connect();
t.teardown(() => proxy.end());

async function orgCreate(label: string): Promise<string> {
  const name = `${label}-${randomBytes(3).toString('hex')}`;
  return (await db.query<{ id: string }>('select pgvpd.org_create($1, $2) as id', [label, name])).rows[0]!.id;
}

const superuser = (await db.query<{ u: string }>('select current_user as u')).rows[0]!.u;
const acme = await orgCreate('acme');
const globex = await orgCreate('globex');
await db.query(`
  create table public.invoices (id serial primary key, org_id uuid not null, body text);
  insert into public.invoices (org_id, body) values
    ('${acme}', 'acme 1'), ('${acme}', 'acme 2'), ('${globex}', 'globex 1');
  select pgvpd.protect('public.invoices', 'org_id');
`);

/** SQLSTATE and message of a rejected query, or 'no error'. */
async function failure(promise: Promise<unknown>): Promise<{ code?: string; message: string } | 'no error'> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return { code, message };
  }
}

async function session(t: Test, url: string): Promise<pg.Client> {
  const client = await connect(url);
  t.teardown(() => client.end());
  return client;
}

/** The privileges `role` holds on a relation, as `PRIVILEGE by grantor` strings, sorted. */
async function held(role: string, relation: string): Promise<string[]> {
  const { rows } = await db.query<{ p: string }>(
    `select x.privilege_type || ' by ' || pg_get_userbyid(x.grantor) as p
       from pg_class c, aclexplode(c.relacl) x
      where c.oid = $2::regclass and x.grantee = $1::regrole
      order by 1`,
    [role, relation],
  );
  return rows.map((r) => r.p);
}

const byAdmin = (...privileges: string[]) => privileges.map((p) => `${p} by pgvpd_admin`).sort();

t.test('a connect_as user added after protect reads exactly its org\'s rows', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [acme, 'alice', makeVerifier('pw'), role.name]);
  const client = await session(t, role.url);
  t.same((await client.query('select count(*)::int as n from public.invoices')).rows, [{ n: 0 }], 'no context: no rows');
  const { rows } = await proxy.query<{ token: string }>('select pgvpd.issue_org_context($1, $2, $3) as token', [
    await backendPid(client),
    acme,
    'alice',
  ]);
  await client.query('select pgvpd.set_context($1)', [rows[0]!.token]);
  t.same((await client.query('select body from public.invoices order by id')).rows, [{ body: 'acme 1' }, { body: 'acme 2' }]);
  t.same(
    (await client.query(`insert into public.invoices (org_id, body) values ($1, 'acme 3') returning body`, [acme])).rows,
    [{ body: 'acme 3' }],
    'it inserts for its org, through the serial column\'s sequence',
  );
  t.same(await failure(client.query(`insert into public.invoices (org_id, body) values ($1, 'x')`, [globex])), {
    code: '42501',
    message: 'new row violates row-level security policy for table "invoices"',
  });
  t.same(await held(role.name, 'public.invoices'), byAdmin('SELECT', 'INSERT', 'UPDATE', 'DELETE'));
  t.same(await held(role.name, 'public.invoices_id_seq'), byAdmin('SELECT', 'USAGE'));
  await db.query(`delete from public.invoices where body = 'acme 3'`);
});

t.test('an application role registered after protect reads its tenant\'s rows', async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser nobypassrls noinherit');
  const client = await session(t, role.url);
  t.same(await failure(client.query('select 1 from public.invoices')), {
    code: '42501',
    message: 'permission denied for table invoices',
  }, 'not registered: no privilege');
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  await giveContext(proxy, client, globex);
  t.same((await client.query('select body from public.invoices order by id')).rows, [{ body: 'globex 1' }]);
});

t.test('protect grants every registered role, once, and status still says protected', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  await db.query('create table public.later (id int, tenant_id text)');
  t.same(await held(role.name, 'public.later'), []);
  t.same((await db.query(`select pgvpd.protect('public.later') as r`)).rows, [{ r: 'public.later protected on column tenant_id' }]);
  t.same(await held(role.name, 'public.later'), byAdmin('SELECT', 'INSERT', 'UPDATE', 'DELETE'));
  t.same(
    await held('pgvpd_admin', 'public.later'),
    ['DELETE', 'INSERT', 'SELECT', 'UPDATE'].map((p) => `${p} by ${superuser}`),
    'what pgvpd_admin may pass on',
  );
  await db.query(`select pgvpd.protect('public.later')`);
  t.same(await held(role.name, 'public.later'), byAdmin('SELECT', 'INSERT', 'UPDATE', 'DELETE'), 'running it again changes nothing');
  t.same(
    (await db.query(`select verdict from pgvpd.status() where table_oid = 'public.later'::regclass`)).rows,
    [{ verdict: 'protected' }],
  );
  t.same((await db.query(`select pgvpd.unprotect('public.later') as r`)).rows, [{ r: 'public.later unprotected' }]);
  t.same(await held(role.name, 'public.later'), [], 'unprotect takes back what was granted for it');
  t.same(await held('pgvpd_admin', 'public.later'), []);
  await db.query('drop table public.later');
});

t.test('a role no longer registered loses what pgvpd granted it, and only that', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query(`grant select on public.invoices to ${role.name}`);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [globex, 'gone', makeVerifier('pw'), role.name]);
  t.same(await held(role.name, 'public.invoices'), [`SELECT by ${superuser}`, ...byAdmin('INSERT', 'UPDATE', 'DELETE')].sort());
  await db.query('select pgvpd.user_remove($1, $2)', [globex, 'gone']);
  t.same(await held(role.name, 'public.invoices'), [`SELECT by ${superuser}`], 'the grant made by hand stays');
  t.same(await held(role.name, 'public.invoices_id_seq'), []);
});

t.test('a table in another schema: pgvpd_admin gets USAGE on it while a table there is protected', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query(`create schema billing; create table billing.items (id int, tenant_id text);
                  select pgvpd.protect('billing.items')`);
  const usage = async () =>
    (await db.query(`select has_schema_privilege('pgvpd_admin', 'billing', 'USAGE') as ok`)).rows[0]!.ok as boolean;
  t.equal(await usage(), true);
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  t.same(await held(role.name, 'billing.items'), byAdmin('SELECT', 'INSERT', 'UPDATE', 'DELETE'));
  await db.query(`select pgvpd.unprotect('billing.items')`);
  t.same(await held(role.name, 'billing.items'), []);
  t.equal(await usage(), false, 'revoked with the last protected table of the schema');
  await db.query('drop schema billing cascade');
});

t.test('lint names a registered role lacking a privilege protect grants, and how to fix it', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  const missing = async () =>
    (
      await db.query<{ severity: string; object: string; detail: string; fix: string }>(
        `select severity, object, detail, fix from pgvpd.lint() where check_name = 'role_missing_grants' order by object`,
      )
    ).rows;
  t.same(await missing(), [], 'silent when every role holds its privileges');

  await db.query(`set role pgvpd_admin; revoke delete on public.invoices from ${role.name};
                  revoke usage on sequence public.invoices_id_seq from ${role.name}; reset role`);
  t.same(await missing(), [
    {
      severity: 'error',
      object: `${role.name} on public.invoices`,
      detail: `tenant role ${role.name} lacks DELETE, USAGE on sequence public.invoices_id_seq on protected table public.invoices, which pgvpd.protect grants every registered tenant role: its sessions get 42501 (permission denied)`,
      fix: `select pgvpd.grant_protected('public.invoices')`,
    },
  ]);
  t.same((await db.query(`select pgvpd.grant_protected('public.invoices') as n`)).rows, [{ n: 2 }], 'the fix grants the two');
  t.same(await missing(), []);
});

t.test('lint: when pgvpd_admin may no longer grant, the fix is protect again', async (t) => {
  const role = await scratchRole(t, db, '');
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  await db.query(`create table public.memo (id int, tenant_id text); select pgvpd.protect('public.memo')`);
  // The owner takes the privilege back from pgvpd_admin, and with it every grant pgvpd_admin made.
  await db.query('revoke update on public.memo from pgvpd_admin cascade');
  const lines = (await lintLines(db)).filter((l) => l.includes(' role_missing_grants '));
  const registered = (await db.query<{ r: string }>('select r from pgvpd.app_roles() r')).rows.map((r) => r.r);
  t.same(lines, registered.map((r) => `error role_missing_grants ${r} on public.memo`).sort());
  const { rows } = await db.query<{ fix: string }>(
    `select distinct fix from pgvpd.lint() where check_name = 'role_missing_grants'`,
  );
  t.same(rows, [{ fix: `select pgvpd.protect('public.memo', 'tenant_id')` }]);
  await db.query(rows[0]!.fix);
  t.same((await lintLines(db)).filter((l) => l.includes(' role_missing_grants ')), []);
  await db.query(`select pgvpd.unprotect('public.memo'); drop table public.memo`);
});

t.test('the whole lint of this database is its lock warnings only', async (t) => {
  const registered = (await db.query<{ r: string }>('select r from pgvpd.app_roles() r')).rows.map((r) => r.r);
  t.same(await lintLines(db), await lockWarnings(db, registered));
});
