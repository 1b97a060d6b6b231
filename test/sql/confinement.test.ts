// Tenant confinement in SQL (issue 11): tenants that share a role reach nothing of each other
// through PostgreSQL's own facilities, and a context is issued only for a backend whose role the
// database has registered for the proxy's mode (docs/threat-model.md, "What a tenant's role cannot reach").
// The guard module's part (ALTER ROLE, explicit locks) is in guard-confinement.test.ts.
import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { backendPid, connect, giveContext, loginRole, scratchRole } from '../support/pgvpd.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const { db } = f;

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

const role = (t: Test, options: string) => scratchRole(t, db, options);

async function session(url: string): Promise<pg.Client> {
  const client = await connect(url);
  t.teardown(() => client.end());
  return client;
}

t.test('finding 2: tenants sharing a role cannot read each other\'s queries', async (t) => {
  const { client: a } = await f.sessionFor('a');
  const { client: b } = await f.sessionFor('b');
  const bPid = await backendPid(b);
  // b's last statement carries a literal a must not learn.
  await b.query(`select 'b-secret-literal' as s`);
  t.same(await failure(a.query('select query from pg_stat_activity')), {
    code: '42501',
    message: 'permission denied for view pg_stat_activity',
  });
  t.same(await failure(a.query('select query from pg_stat_get_activity($1)', [bPid])), {
    code: '42501',
    message: 'permission denied for function pg_stat_get_activity',
  });
  t.same(
    await failure(
      a.query('select pg_stat_get_backend_activity(s) from pg_stat_get_backend_idset() s'),
    ),
    { code: '42501', message: 'permission denied for function pg_stat_get_backend_idset' },
  );
  t.same(await failure(a.query('select pg_stat_get_backend_activity(1)')), {
    code: '42501',
    message: 'permission denied for function pg_stat_get_backend_activity',
  });
  // Operators and monitoring keep it: a pg_read_all_stats member reads b's statement.
  const monitor = await role(t, 'in role pg_read_all_stats');
  const watcher = await session(monitor.url);
  const { rows } = await watcher.query<{ query: string }>('select query from pg_stat_activity where pid = $1', [bPid]);
  t.same(rows, [{ query: `select 'b-secret-literal' as s` }], 'monitoring still sees activity');
});

t.test('finding 6: tenants sharing a role cannot signal each other\'s backends', async (t) => {
  const { client: a } = await f.sessionFor('a');
  const { client: b } = await f.sessionFor('b');
  const bPid = await backendPid(b);
  t.same(await failure(a.query('select pg_terminate_backend($1)', [bPid])), {
    code: '42501',
    message: 'permission denied for function pg_terminate_backend',
  });
  t.same(await failure(a.query('select pg_cancel_backend($1)', [bPid])), {
    code: '42501',
    message: 'permission denied for function pg_cancel_backend',
  });
  t.same(await f.visible(b), { a: 0, b: 3, total: 3 }, 'b is alive and still b');
  // pgvpd's own use stays: the proxy's end_session (pgvpd_admin, pg_signal_backend) ends b.
  t.same((await f.proxy.query('select pgvpd.end_session($1) as ended', [bPid])).rows, [{ ended: true }]);
});

t.test('finding 7: tenants sharing a role cannot use or list large objects', async (t) => {
  const { client: a } = await f.sessionFor('a');
  const { client: b } = await f.sessionFor('b');
  t.same(await failure(a.query(`select lo_from_bytea(0, 'a-secret')`)), {
    code: '42501',
    message: 'permission denied for function lo_from_bytea',
  });
  // A large object that exists (made by the owner) can be neither listed nor read by a tenant.
  const { rows } = await db.query<{ oid: number }>(`select lo_from_bytea(0, 'owner-data') as oid`);
  const oid = rows[0]!.oid;
  await db.query(`alter large object ${String(oid)} owner to ${f.app.name}`);
  t.teardown(() => db.query(`select lo_unlink(${String(oid)})`));
  t.same(await failure(b.query('select oid from pg_largeobject_metadata')), {
    code: '42501',
    message: 'permission denied for table pg_largeobject_metadata',
  });
  t.same(await failure(b.query('select lo_get($1)', [oid])), {
    code: '42501',
    message: 'permission denied for function lo_get',
  });
  t.same(await failure(b.query('select lo_open($1, 262144)', [oid])), {
    code: '42501',
    message: 'permission denied for function lo_open',
  });
});

t.test('confinement is reported, reversible per facility, and lint sees it open', async (t) => {
  const state = async () =>
    (await db.query<{ facility: string; wanted: boolean; state: string }>('select facility, wanted, state from pgvpd.confinement()')).rows;
  t.same(await state(), [
    { facility: 'activity', wanted: true, state: 'confined' },
    { facility: 'large_objects', wanted: true, state: 'confined' },
    { facility: 'signals', wanted: true, state: 'confined' },
  ]);
  const { client: a } = await f.sessionFor('a');
  t.ok((await db.query<{ n: number }>(`select pgvpd.unconfine('activity') as n`)).rows[0]!.n > 0, 'unconfine reverts');
  t.same((await state())[0], { facility: 'activity', wanted: false, state: 'open' });
  t.equal((await a.query('select count(*) from pg_stat_activity')).rowCount, 1, 'open again: the tenant reads it');
  const lint = await db.query(`select severity, check_name, object from pgvpd.lint() where check_name = 'confinement_open'`);
  t.same(lint.rows, [{ severity: 'warning', check_name: 'confinement_open', object: 'activity' }]);
  await db.query(`select pgvpd.confine('activity')`);
  t.same((await state())[0], { facility: 'activity', wanted: true, state: 'confined' });
  t.same(await failure(a.query('select count(*) from pg_stat_activity')), {
    code: '42501',
    message: 'permission denied for view pg_stat_activity',
  });
  t.same(await failure(db.query(`select pgvpd.confine('everything')`)), {
    code: '22023',
    message: `pgvpd: no confinement facility 'everything'`,
  });
  const admin = await (await loginRole(t, db, 'admin')).connect();
  t.teardown(() => admin.end());
  t.same(await failure(admin.query(`select pgvpd.unconfine()`)), {
    code: '42501',
    message: 'pgvpd: unconfine() must be run by a superuser',
  });
});

t.test('setup keeps what the operator chose', async (t) => {
  const other = await fixture(t);
  await other.db.query(`select pgvpd.unconfine('large_objects')`);
  await other.db.query((await import('node:fs')).readFileSync(new URL('../../sql/setup.sql', import.meta.url), 'utf8'));
  const { rows } = await other.db.query('select facility, state from pgvpd.confinement() order by 1');
  t.same(rows, [
    { facility: 'activity', state: 'confined' },
    { facility: 'large_objects', state: 'open' },
    { facility: 'signals', state: 'confined' },
  ]);
});

t.test('finding 1, finding 3: issue_context serves registered application roles only, refused with 28000', async (t) => {
  const refusal = async (client: pg.Client) =>
    failure(f.proxy.query('select pgvpd.issue_context($1, $2)', [await backendPid(client), 'a']));
  const message = (pid: number, problem: string) => ({
    code: '28000',
    message: `pgvpd: no context for backend ${String(pid)}: ${problem}`,
  });
  const superuser = await session(db.url);
  const superuserName = (await superuser.query<{ u: string }>('select current_user as u')).rows[0]!.u;
  t.same(await refusal(superuser), message(await backendPid(superuser), `role ${superuserName} is a superuser`));

  const bypass = await role(t, 'bypassrls');
  await db.query('select pgvpd.add_app_role($1)', [bypass.name]);
  const bypassClient = await session(bypass.url);
  t.same(await refusal(bypassClient), message(await backendPid(bypassClient), `role ${bypass.name} has BYPASSRLS`));

  const boss = `conf_boss_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${boss} nologin bypassrls`);
  t.teardown(() => db.query(`drop role if exists ${boss}`));
  const member = await role(t, `in role ${boss}`);
  await db.query('select pgvpd.add_app_role($1)', [member.name]);
  const memberClient = await session(member.url);
  t.same(
    await refusal(memberClient),
    message(await backendPid(memberClient), `role ${member.name} is a member of ${boss}, which has BYPASSRLS`),
  );

  const adminMember = await role(t, 'in role pgvpd_admin');
  await db.query('select pgvpd.add_app_role($1)', [adminMember.name]);
  const adminClient = await session(adminMember.url);
  t.same(
    await refusal(adminClient),
    message(await backendPid(adminClient), `role ${adminMember.name} is a member of pgvpd_admin, which is one of pgvpd's own roles`),
  );

  const apiMember = await role(t, 'noinherit in role pgvpd_api');
  await db.query('select pgvpd.add_app_role($1)', [apiMember.name]);
  const apiClient = await session(apiMember.url);
  t.same(
    await refusal(apiClient),
    message(await backendPid(apiClient), `role ${apiMember.name} is a member of pgvpd_api, which is one of pgvpd's own roles`),
  );
  t.same(
    await failure(f.proxy.query('select pgvpd.issue_org_context($1, $2, $3)', [await backendPid(apiClient), randomUUID(), 'u'])),
    message(await backendPid(apiClient), `role ${apiMember.name} is a member of pgvpd_api, which is one of pgvpd's own roles`),
    'in org mode too',
  );

  const stranger = await role(t, '');
  const strangerClient = await session(stranger.url);
  t.same(
    await refusal(strangerClient),
    message(await backendPid(strangerClient), `role ${stranger.name} is not a registered application role`),
  );

  // An org's connect_as role is served in org mode only: this is how an org user, having set
  // its connect_as role's password, reached another org's rows through the app-mode proxy.
  const connectAs = await role(t, '');
  const orgId = (await db.query<{ id: string }>(`select pgvpd.org_create('Conf', 'conf-${randomBytes(3).toString('hex')}') as id`)).rows[0]!.id;
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgId, 'alice', makeVerifier('pw'), connectAs.name]);
  const orgClient = await session(connectAs.url);
  t.same(
    await refusal(orgClient),
    message(await backendPid(orgClient), `role ${connectAs.name} is an org's connect_as role, served in org mode only`),
  );
  t.same(
    (await db.query('select count(*)::int as n from pgvpd_private.session_context where pid = $1', [await backendPid(orgClient)])).rows,
    [{ n: 0 }],
    'nothing was signed for it',
  );

  const { client: ok } = await f.sessionFor('a');
  t.same(await f.visible(ok), { a: 2, b: 0, total: 2 }, 'a registered application role is served');
});

t.test('finding 1: issue_org_context serves the org user\'s own connect_as role only', async (t) => {
  const suffix = randomBytes(3).toString('hex');
  const roleA = await role(t, '');
  const roleB = await role(t, '');
  const orgA = (await db.query<{ id: string }>(`select pgvpd.org_create('A', 'conf-a-${suffix}') as id`)).rows[0]!.id;
  const orgB = (await db.query<{ id: string }>(`select pgvpd.org_create('B', 'conf-b-${suffix}') as id`)).rows[0]!.id;
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgA, 'alice', makeVerifier('pw'), roleA.name]);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgB, 'bob', makeVerifier('pw'), roleB.name]);
  const clientA = await session(roleA.url);
  const pidA = await backendPid(clientA);
  const issue = (pid: number, org: string, user: string) =>
    f.proxy.query<{ token: string }>('select pgvpd.issue_org_context($1, $2, $3) as token', [pid, org, user]);

  const token = (await issue(pidA, orgA, 'alice')).rows[0]!.token;
  await clientA.query('select pgvpd.set_context($1)', [token]);
  t.same((await clientA.query('select pgvpd.current_tenant_id() as t')).rows, [{ t: orgA }], 'its own org');

  t.same(await failure(issue(pidA, orgB, 'bob')), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is not the connect_as role of user 'bob' in active org ${orgB}`,
  });
  const { client: app } = await f.sessionFor(null);
  const appPid = await backendPid(app);
  t.same(await failure(issue(appPid, orgA, 'alice')), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(appPid)}: role ${f.app.name} is not the connect_as role of user 'alice' in active org ${orgA}`,
  });
  await db.query('select pgvpd.org_suspend($1)', [orgA]);
  t.same(await failure(issue(pidA, orgA, 'alice')), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is not the connect_as role of user 'alice' in active org ${orgA}`,
  });
  t.same(await failure(f.proxy.query('select pgvpd.issue_org_context($1, null, $2)', [pidA, 'alice'])), {
    code: '22023',
    message: 'pgvpd: issue_org_context needs an org and a user',
  });
  const appRole = await loginRole(t, db, 'app');
  const appClient = await appRole.connect();
  t.teardown(() => appClient.end());
  t.same(
    await failure(f.proxy.query('select pgvpd.issue_org_context($1, $2, $3)', [await backendPid(appClient), orgB, 'bob'])),
    {
      code: '28000',
      message: `pgvpd: no context for backend ${String(await backendPid(appClient))}: role ${appRole.name} is not the connect_as role of user 'bob' in active org ${orgB}`,
    },
  );
  t.same(await failure(giveContext(f.proxy, clientA, 'a')), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is an org's connect_as role, served in org mode only`,
  });
});

t.test('in a database that does not catalog the org (dedicated placement), only a role registered there', async (t) => {
  const elsewhere = '00000000-0000-4000-8000-000000000001';
  const registered = await role(t, '');
  await db.query('select pgvpd.add_app_role($1)', [registered.name]);
  const unregistered = await role(t, '');
  const okClient = await session(registered.url);
  const token = (
    await f.proxy.query<{ token: string }>('select pgvpd.issue_org_context($1, $2, $3) as token', [
      await backendPid(okClient),
      elsewhere,
      'carol',
    ])
  ).rows[0]!.token;
  await okClient.query('select pgvpd.set_context($1)', [token]);
  t.same((await okClient.query('select pgvpd.current_tenant_id() as t')).rows, [{ t: elsewhere }]);
  const noClient = await session(unregistered.url);
  const pid = await backendPid(noClient);
  t.same(await failure(f.proxy.query('select pgvpd.issue_org_context($1, $2, $3)', [pid, elsewhere, 'carol'])), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pid)}: role ${unregistered.name} is not registered in this database, which does not catalog org ${elsewhere}`,
  });
});

t.test('pgvpd_api itself, given LOGIN, gets no context in either mode', async (t) => {
  // pgvpd_api is NOLOGIN; a backend of it needs LOGIN committed for a moment (roles are
  // cluster-wide: only this run's server sees it), taken back at once.
  const password = randomBytes(9).toString('hex');
  await db.query(`alter role pgvpd_api login password '${password}'`);
  let client: pg.Client;
  try {
    client = await connect(db.urlFor('pgvpd_api', password));
  } finally {
    await db.query('alter role pgvpd_api nologin password null');
  }
  t.teardown(() => client.end());
  const pid = await backendPid(client);
  const expected = { code: '28000', message: `pgvpd: no context for backend ${String(pid)}: role pgvpd_api is one of pgvpd's own roles` };
  t.same(await failure(f.proxy.query('select pgvpd.issue_context($1, $2)', [pid, 'a'])), expected, 'app mode');
  t.same(
    await failure(f.proxy.query('select pgvpd.issue_org_context($1, $2, $3)', [pid, randomUUID(), 'u'])),
    expected,
    'org mode',
  );
  t.same(
    (await db.query('select count(*)::int as n from pgvpd_private.session_context where pid = $1', [pid])).rows,
    [{ n: 0 }],
    'nothing was signed for it',
  );
});

t.test('registered tenant roles are marked as members of pgvpd_tenant, pgvpd\'s roles are not', async (t) => {
  // pgvpd_api registered by mistake (lint reports it) is not marked either.
  await db.query(`select pgvpd.add_app_role('pgvpd_api')`);
  t.teardown(() => db.query(`delete from pgvpd_private.app_role where role_name = 'pgvpd_api'`));
  const { rows } = await db.query<{ rolname: string; tenant: boolean }>(
    `select r.rolname, exists (select 1 from pg_auth_members m where m.roleid = 'pgvpd_tenant'::regrole and m.member = r.oid) as tenant
       from pg_roles r where r.rolname = any ($1) order by 1`,
    [['app_user', f.app.name, 'pgvpd_proxy', 'pgvpd_api']],
  );
  t.same(
    rows,
    [
      { rolname: 'app_user', tenant: true },
      { rolname: f.app.name, tenant: true },
      { rolname: 'pgvpd_proxy', tenant: false },
      { rolname: 'pgvpd_api', tenant: false },
    ].sort((x, y) => (x.rolname < y.rolname ? -1 : 1)),
  );
});
