// pgvpd.lint(): nothing on a clean schema; each planted problem found, named, and gone once fixed.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { contextPath, installPgvpd, loginRole } from '../support/pgvpd.js';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const app = await loginRole(t, db, 'app');
// A sound schema: keys include the tenant column, and the test's tenant role has a lock_timeout
// of its own (lock_without_timeout on the SQL path).
await db.query(`
  create table public.docs (id int, tenant_id text not null, body text, primary key (tenant_id, id));
  select pgvpd.protect('public.docs');
  create table public.lookup (id int primary key, label text);
  grant select on public.lookup to ${app.name};
  alter role ${app.name} set lock_timeout = '5s';
`);
const guardPath = (await contextPath(db)) === 'guard';

async function findings() {
  const { rows } = await db.query<{ severity: string; check_name: string; object: string; fix: string }>(
    'select severity, check_name, object, fix from pgvpd.lint()',
  );
  // app_user is registered in every database and shared by every test file, which never alter
  // it; on the SQL path lint rightly warns that it has no lock_timeout (checked below).
  return rows.filter((r) => !(r.check_name === 'lock_without_timeout' && r.object === 'app_user'));
}

t.test('on the SQL path, app_user without a lock_timeout of its own is warned about', async (t) => {
  const { rows } = await db.query<{ severity: string; fix: string }>(
    `select severity, fix from pgvpd.lint() where check_name = 'lock_without_timeout' and object = 'app_user'`,
  );
  t.same(
    rows,
    guardPath
      ? []
      : [{ severity: 'warning', fix: `alter role app_user set lock_timeout = '5s'; or load pgvpd_guard (docs/guard.md)` }],
  );
});

t.test('finds nothing on a clean schema with a protected table', async (t) => {
  t.same(await findings(), []);
});

interface Case {
  check: string;
  severity: 'error' | 'warning';
  object: string;
  plant: string;
  fix: string;
}

const cases: Case[] = [
  {
    check: 'app_role_privileged',
    severity: 'error',
    object: app.name,
    plant: `alter role ${app.name} bypassrls`,
    fix: `alter role ${app.name} nobypassrls`,
  },
  {
    check: 'app_role_privileged',
    severity: 'error',
    object: app.name,
    plant: `create role ${app.name}_boss nologin superuser; grant ${app.name}_boss to ${app.name}`,
    fix: `drop role ${app.name}_boss`,
  },
  {
    check: 'app_role_pgvpd_member',
    severity: 'error',
    object: app.name,
    plant: `grant pgvpd_admin to ${app.name}`,
    fix: `revoke pgvpd_admin from ${app.name}`,
  },
  {
    check: 'app_role_pgvpd_member',
    severity: 'error',
    object: app.name,
    plant: `grant pgvpd_api to ${app.name}`,
    fix: `revoke pgvpd_api from ${app.name}`,
  },
  {
    // pgvpd_api registered by mistake: the one finding (no role_missing_grants: pgvpd grants it nothing)
    check: 'app_role_pgvpd_member',
    severity: 'error',
    object: 'pgvpd_api',
    plant: `select pgvpd.add_app_role('pgvpd_api')`,
    fix: `delete from pgvpd_private.app_role where role_name = 'pgvpd_api'`,
  },
  {
    check: 'unprotected_tenant_table',
    severity: 'error',
    object: 'public.invoices',
    plant: `create table public.invoices (id int, org_id uuid); grant select on public.invoices to ${app.name}`,
    fix: `select pgvpd.protect('public.invoices', 'org_id')`,
  },
  {
    check: 'rls_not_forced',
    severity: 'warning',
    object: 'public.docs',
    plant: `alter table public.docs no force row level security`,
    fix: `alter table public.docs force row level security`,
  },
  {
    check: 'view_not_security_invoker',
    severity: 'error',
    object: 'public.docs_view',
    plant: `create view public.docs_view as select id, body from public.docs`,
    fix: `alter view public.docs_view set (security_invoker = true)`,
  },
  {
    check: 'matview_over_rls_table',
    severity: 'error',
    object: 'public.docs_snapshot',
    plant: `create materialized view public.docs_snapshot as select * from public.docs`,
    fix: `drop materialized view public.docs_snapshot`,
  },
  {
    check: 'definer_without_search_path',
    severity: 'error',
    object: 'public.leaky()',
    plant: `create function public.leaky() returns int language sql security definer as 'select 1'`,
    fix: `alter function public.leaky() set search_path = ''`,
  },
  {
    check: 'policy_per_row_call',
    severity: 'warning',
    object: 'per_row on public.docs',
    plant: `create policy per_row on public.docs as restrictive using (tenant_id = current_setting('app.tenant', true))`,
    fix: `alter policy per_row on public.docs using (tenant_id = (select current_setting('app.tenant', true)))`,
  },
  {
    check: 'policy_per_row_call',
    severity: 'warning',
    object: 'per_row_fn on public.docs',
    plant: `create policy per_row_fn on public.docs as restrictive using (tenant_id = pgvpd.current_tenant_id())`,
    fix: `drop policy per_row_fn on public.docs`,
  },
  {
    check: 'public_schema_create',
    severity: 'warning',
    object: 'schema public',
    plant: `grant create on schema public to public`,
    fix: `revoke create on schema public from public`,
  },
  {
    check: 'unique_key_without_tenant',
    severity: 'warning',
    object: 'public.docs_body_key',
    plant: `alter table public.docs add constraint docs_body_key unique (body)`,
    fix: `alter table public.docs drop constraint docs_body_key`,
  },
  {
    check: 'role_missing_grants',
    severity: 'error',
    object: `${app.name} on public.docs`,
    // protect() had pgvpd_admin grant it, so only pgvpd_admin can take it back
    plant: `set role pgvpd_admin; revoke delete on public.docs from ${app.name}; reset role`,
    fix: `select pgvpd.grant_protected('public.docs')`,
  },
  {
    check: 'confinement_open',
    severity: 'error',
    object: 'activity',
    plant: `grant select on pg_catalog.pg_stat_activity to public`,
    fix: `select pgvpd.confine('activity')`,
  },
  {
    check: 'confinement_open',
    severity: 'warning',
    object: 'large_objects',
    plant: `select pgvpd.unconfine('large_objects')`,
    fix: `select pgvpd.confine('large_objects')`,
  },
];
if (!guardPath) {
  cases.push(
    {
      check: 'lock_without_timeout',
      severity: 'warning',
      object: app.name,
      plant: `alter role ${app.name} reset lock_timeout`,
      fix: `alter role ${app.name} set statement_timeout = '30s'`,
    },
    {
      check: 'connect_as_shared',
      severity: 'warning',
      object: app.name,
      plant: `
        select pgvpd.user_add(pgvpd.org_create('L1', 'lint-one'), 'u', '${makeVerifier('pw')}', '${app.name}');
        select pgvpd.user_add(pgvpd.org_create('L2', 'lint-two'), 'u', '${makeVerifier('pw')}', '${app.name}')`,
      fix: `select pgvpd.org_remove(pgvpd.org_id('lint-two'))`,
    },
  );
}

t.test('a unique key of values the database fills is no oracle worth a warning', async (t) => {
  await db.query(`
    create table public.serials (id bigint generated always as identity primary key, tenant_id text not null,
                                 ref uuid not null default gen_random_uuid() unique);
    select pgvpd.protect('public.serials')`);
  t.same(await findings(), []);
  await db.query('drop table public.serials');
});

for (const c of cases) {
  t.test(`finds ${c.check} when planted (${c.plant.slice(0, 60)}) and nothing once fixed`, async (t) => {
    await db.query(c.plant);
    const found = await findings();
    t.same(
      found.map(({ severity, check_name, object }) => ({ severity, check_name, object })),
      [{ severity: c.severity, check_name: c.check, object: c.object }],
      'exactly the planted finding',
    );
    t.ok(found[0]?.fix, 'the finding says how to fix it');
    await db.query(c.fix);
    t.same(await findings(), [], 'fixed');
  });
}

t.test('finds transaction_pool_temp for a transaction-pooled org whose role may create temporary tables', async (t) => {
  const role = `lint_tx_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${role} login nosuperuser nobypassrls noinherit`);
  t.teardown(async () => {
    await db.query(`select pgvpd.org_remove(pgvpd.org_id('lint-tx'))`).catch(() => undefined);
    await db.query(`grant temporary on database ${db.name} to public`);
    await db.query(`drop owned by ${role}`).catch(() => undefined);
    await db.query(`drop role if exists ${role}`);
  });
  await db.query(`alter role ${role} set lock_timeout = '5s'`);
  const org = (await db.query<{ id: string }>(`select pgvpd.org_create('Tx', 'lint-tx') as id`)).rows[0]!.id;
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [org, 'u', makeVerifier('pw'), role]);
  t.same(await findings(), [], 'session pooling (the default): nothing');
  await db.query(`select pgvpd.org_set_pool_mode($1, 'transaction')`, [org]);
  const { rows } = await db.query<{ severity: string; object: string; detail: string; fix: string }>(
    `select severity, object, detail, fix from pgvpd.lint() where check_name = 'transaction_pool_temp'`,
  );
  t.same(rows, [
    {
      severity: 'warning',
      object: role,
      detail: `connect_as role ${role} of org lint-tx (pool mode transaction) may create temporary tables in database ${db.name}: they outlive the transaction, on a backend the proxy goes on to lend to other sessions`,
      fix: `revoke temporary on database ${db.name} from ${role}; revoke temporary on database ${db.name} from public`,
    },
  ]);
  t.same(
    (await findings()).map((r) => r.check_name),
    ['transaction_pool_temp'],
    'the only finding',
  );
  const tenant = await app.connect();
  t.teardown(() => tenant.end());
  t.same(
    (await tenant.query(`select check_name from pgvpd.lint() where check_name = 'transaction_pool_temp'`)).rows,
    [],
    'a tenant running lint() learns no org name',
  );
  await db.query(rows[0]!.fix);
  t.same(await findings(), [], 'fixed: the role has TEMPORARY neither itself nor through PUBLIC');
});
