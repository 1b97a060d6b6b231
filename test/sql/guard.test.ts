// The guard path (docs/guard.md), when the run's server has loaded the pgvpd_guard module
// (CI: PGVPD_TEST_PRELOAD=pgvpd_guard): the application role cannot set any guarded setting by
// any route PostgreSQL offers, other pgvpd.* names cannot be made up, RESET ALL and DISCARD ALL
// leave no rows, and the accessors are plain settings reads the planner inlines.
import pg from 'pg';
import t from 'tap';
import { sqlstate } from '../support/pgvpd.js';
import { startupMessage, WireClient } from '../support/wire.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const path = (await f.db.query<{ path: string }>('select path from pgvpd.context_path()')).rows[0]!
  .path;
const guarded = ['pgvpd.context', 'pgvpd.tenant_id', 'pgvpd.user_id', 'pgvpd.values'];
const skip = path !== 'guard' && 'this server does not load pgvpd_guard (the SQL path)';
const own = { a: 2, b: 0, total: 2 };

t.test('SET, SET LOCAL, set_config and RESET of a guarded setting: 42501', { skip }, async (t) => {
  const { client } = await f.sessionFor('a');
  for (const name of guarded) {
    const attempts = {
      SET: `set ${name} = 'b'`,
      'SET LOCAL': `begin; set local ${name} = 'b'; commit`,
      set_config: `select set_config('${name}', 'b', false)`,
      'set_config (local)': `select set_config('${name}', 'b', true)`,
      RESET: `reset ${name}`,
    };
    for (const [how, sql] of Object.entries(attempts)) {
      t.equal(await sqlstate(client.query(sql)), '42501', `${how} ${name}`);
      await client.query('rollback').catch(() => undefined);
    }
  }
  t.same(await f.visible(client), own, 'the verified context is untouched');
});

t.test('ALTER ROLE … SET and ALTER DATABASE … SET by non-superusers: 42501', { skip }, async (t) => {
  const owner = `pgvpd_guard_owner_${String(process.pid)}`;
  const database = `pgvpd_guard_db_${String(process.pid)}`;
  await f.db.query(`create role ${owner} login createrole nosuperuser`);
  await f.db.query(`create database ${database} owner ${owner}`);
  t.teardown(async () => {
    await f.db.query(`drop database if exists ${database}`);
    await f.db.query(`drop role if exists ${owner}`);
  });
  const asOwner = new pg.Client({ connectionString: f.db.url });
  await asOwner.connect();
  t.teardown(() => asOwner.end());
  await asOwner.query(`set role ${owner}`);
  const app = await f.app.connect();
  t.teardown(() => app.end());
  for (const name of guarded) {
    t.equal(
      await sqlstate(app.query(`alter role current_user set ${name} = 'b'`)),
      '42501',
      `the application role: ALTER ROLE itself SET ${name}`,
    );
    t.equal(
      await sqlstate(asOwner.query(`alter role ${f.app.name} set ${name} = 'b'`)),
      '42501',
      `a CREATEROLE role: ALTER ROLE SET ${name}`,
    );
    t.equal(
      await sqlstate(asOwner.query(`alter database ${database} set ${name} = 'b'`)),
      '42501',
      `the database's owner: ALTER DATABASE SET ${name}`,
    );
  }
});

t.test('options=-c and a startup parameter: the login is refused with 42501', { skip }, async (t) => {
  for (const name of guarded) {
    const client = new pg.Client({
      connectionString: f.app.url,
      options: `-c ${name}=b`,
    });
    client.on('error', () => undefined);
    const error = await client.connect().then(
      () => undefined,
      (e: unknown) => e as pg.DatabaseError,
    );
    await client.end().catch(() => undefined);
    t.same(
      { severity: error?.severity, code: error?.code, message: error?.message },
      {
        severity: 'FATAL',
        code: '42501',
        message: `permission denied to set parameter "${name}"`,
      },
      `options=-c ${name}=b`,
    );

    const wire = await WireClient.connect(f.db.server.port, f.db.server.host);
    t.teardown(() => {
      wire.destroy();
    });
    wire.write(startupMessage({ user: f.app.name, database: f.db.name, [name]: 'b' }));
    const refused = await wire.authenticate(f.app.password).then(
      () => 'logged in',
      (e: unknown) => (e as Error).message,
    );
    const fields = JSON.parse(/\{.*\}$/.exec(refused)?.[0] ?? '{}') as Record<string, string>;
    t.same(
      { S: fields.S, C: fields.C, M: fields.M },
      { S: 'FATAL', C: '42501', M: `permission denied to set parameter "${name}"` },
      `startup parameter ${name}`,
    );
  }
});

t.test('other pgvpd.* names are reserved: 42602', { skip }, async (t) => {
  const { client } = await f.sessionFor('a');
  t.equal(await sqlstate(client.query(`set pgvpd.tenant = 'b'`)), '42602', 'SET pgvpd.tenant');
  t.equal(
    await sqlstate(client.query(`select set_config('pgvpd.anything', 'b', false)`)),
    '42602',
    'set_config(pgvpd.anything)',
  );
});

t.test('RESET ALL and DISCARD ALL end the context: zero rows', { skip }, async (t) => {
  for (const sql of ['reset all', 'discard all']) {
    const { client } = await f.sessionFor('a');
    await client.query(sql);
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 }, sql);
    t.same(
      (await client.query(`select current_setting('pgvpd.tenant_id') as v`)).rows,
      [{ v: '' }],
      `${sql}: the tenant setting is back to empty`,
    );
  }
});

t.test('the accessors inline into the policy as settings reads', { skip }, async (t) => {
  const { client } = await f.sessionFor('a');
  const plan = (
    await client.query<{ 'QUERY PLAN': string }>(
      'explain (verbose, costs off) select * from public.notes',
    )
  ).rows
    .map((row) => row['QUERY PLAN'])
    .join('\n');
  t.match(plan, /current_setting\('pgvpd\.tenant_id'::text, true\)/, 'the setting is read');
  t.notMatch(plan, /current_tenant_id/, 'no function call left');
  t.same(
    (
      await client.query(
        `select pgvpd.current_tenant_id() as tenant, pgvpd.context('tenant') as c, current_setting('pgvpd.context') <> '' as carried`,
      )
    ).rows,
    [{ tenant: 'a', c: 'a', carried: true }],
  );
});
