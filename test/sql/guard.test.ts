// The guard path (docs/guard.md), when the run's server has loaded the pgvpd_guard module
// (CI: PGVPD_TEST_PRELOAD=pgvpd_guard): the application role cannot set any guarded setting by
// any route PostgreSQL offers, other pgvpd.* names cannot be made up, RESET ALL and DISCARD ALL
// leave no rows, and the accessors are plain settings reads the planner inlines.
import pg from 'pg';
import t from 'tap';
import { contextPath, sqlstate } from '../support/pgvpd.js';
import { startupMessage, WireClient } from '../support/wire.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const path = await contextPath(f.db);
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

t.test('the accessors are the module’s C functions, reading the guarded settings', { skip }, async (t) => {
  const { rows: languages } = await f.db.query<{ fn: string; lang: string; definer: boolean }>(
    `select p.oid::regprocedure::text as fn, l.lanname as lang, p.prosecdef as definer
       from pg_proc p join pg_language l on l.oid = p.prolang
      where p.oid in ('pgvpd.current_tenant_id()'::regprocedure, 'pgvpd.context(text)'::regprocedure)
      order by 1`,
  );
  t.same(languages, [
    { fn: 'pgvpd.context(text)', lang: 'c', definer: false },
    { fn: 'pgvpd.current_tenant_id()', lang: 'c', definer: false },
  ]);
  const { client } = await f.sessionFor('a');
  const pid = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  const admin = await f.proxy.query<{ token: string }>(
    'select pgvpd.issue_context($1, $2, $3, $4) as token',
    [pid.rows[0]!.pid, 'a', 'alice', JSON.stringify({ region: 'eu', level: 3, staff: true })],
  );
  await client.query('select pgvpd.set_context($1)', [admin.rows[0]!.token]);
  t.same(
    (
      await client.query(
        `select pgvpd.current_tenant_id() as tenant, pgvpd.context('tenant') as c_tenant,
                pgvpd.context('user') as c_user, pgvpd.context('region') as region,
                pgvpd.context('level') as level, pgvpd.context('staff') as staff,
                pgvpd.context('missing') as missing, pgvpd.context(null) as null_key`,
      )
    ).rows,
    [
      {
        tenant: 'a',
        c_tenant: 'a',
        c_user: 'alice',
        region: 'eu',
        level: '3',
        staff: 'true',
        missing: null,
        null_key: null,
      },
    ],
    'tenant, user and the extra values, as the SQL path gives them',
  );
  t.same(await f.visible(client), own);
  await client.query('discard all');
  t.same(
    (await client.query(`select pgvpd.current_tenant_id() as t, pgvpd.context('region') as r`))
      .rows,
    [{ t: null, r: null }],
    'nothing after DISCARD ALL',
  );
});

t.test('a token on record for an earlier backend with this pid is refused', { skip }, async (t) => {
  // What a recycled pid looks like from inside: the record's backend start is not this backend's.
  const { client } = await f.sessionFor(null);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const { rows } = await f.proxy.query<{ token: string }>(
    'select pgvpd.issue_context($1, $2) as token',
    [pid, 'b'],
  );
  await f.db.query(
    `update pgvpd_private.session_context set backend_start = backend_start - interval '1 hour' where pid = $1`,
    [pid],
  );
  const error = await client.query('select pgvpd.set_context($1)', [rows[0]!.token]).then(
    () => undefined,
    (e: unknown) => e as pg.DatabaseError,
  );
  t.same(
    { code: error?.code, message: error?.message },
    { code: '28000', message: 'pgvpd: context token is no longer current for this backend' },
  );
  t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
});
