// pgvpd.lint(): nothing on a clean schema; each planted problem found, named, and gone once fixed.
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const app = await loginRole(t, db, 'app');
await db.query(`
  create table public.docs (id int primary key, tenant_id text not null, body text);
  select pgvpd.protect('public.docs');
  create table public.lookup (id int primary key, label text);
  grant select on public.lookup to ${app.name};
`);

async function findings() {
  const { rows } = await db.query<{ severity: string; check_name: string; object: string; fix: string }>(
    'select severity, check_name, object, fix from pgvpd.lint()',
  );
  return rows;
}

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
];

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
