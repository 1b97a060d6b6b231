// Tenant confinement in the guard module (docs/guard.md, "Tenant confinement"; issue 11, finding 6):
// tenants sharing one PostgreSQL role must not change that role for each other (ALTER ROLE:
// password, settings, name) nor lock a shared table against each other. Where the server loads
// pgvpd_guard (CI: PGVPD_TEST_PRELOAD=pgvpd_guard) the module refuses both with 42501; without it
// (the SQL path) the same statements succeed, and the tests say so: that is what the SQL path
// cannot stop (docs/guard.md).
//
// A tenant role is pgvpd_tenant or a member of it, but not pgvpd_admin or a member of it (setup
// gives pgvpd_admin ADMIN OPTION on pgvpd_tenant, which makes it a member). Setup makes every
// registered application role a member; the tests grant the membership themselves too, and make
// pgvpd_tenant if setup did not.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import t from 'tap';
import { createTestDatabase, type TestLike } from '../support/postgres.js';
import { connect, installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
await db.query(`
  do $$
  begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'pgvpd_tenant') then
      create role pgvpd_tenant nologin;
    end if;
  exception when duplicate_object or unique_violation then
    null; -- created meanwhile by another test file
  end;
  $$;
  do $$
  begin
    if not pg_catalog.pg_has_role('pgvpd_admin', 'pgvpd_tenant', 'member') then
      grant pgvpd_tenant to pgvpd_admin with admin option;
    end if;
  end;
  $$;
  create table public.shared (id serial primary key, tenant_id text not null, body text);
  insert into public.shared (tenant_id, body) values ('a', 'a1'), ('b', 'b1');
`);
// Whether the module is loaded (in every session: the run preloads it or does not).
const guard = (
  await db.query<{ loaded: boolean }>('select module_loaded as loaded from pgvpd.context_path()')
).rows[0]!.loaded;
const path = guard ? 'guard path' : 'SQL path';

type Outcome = { code?: string; message?: string; hint?: string } | 'ok';

async function outcome(promise: Promise<unknown>): Promise<Outcome> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    const { code, message, hint } = error as pg.DatabaseError;
    return { code, message, hint };
  }
}

const alterRefused = (role: string): Outcome => ({
  code: '42501',
  message: `pgvpd: role "${role}" is a tenant role: only a superuser or pgvpd_admin may alter it`,
  hint: 'The tenants sharing this role share its password, settings and name; a change to them is made by a superuser or a member of pgvpd_admin.',
});

const lockRefused = (mode: string): Outcome => ({
  code: '42501',
  message: `pgvpd: tenant roles may not lock tables in ${mode} mode`,
  hint: 'ROW EXCLUSIVE and weaker modes (what DML takes) are allowed.',
});

/** A registered application role made a tenant role, with DML on public.shared. */
async function tenantRole(t: TestLike): Promise<LoginRole> {
  const role = await loginRole(t, db, 'app');
  await db.query(`grant pgvpd_tenant to ${role.name}`);
  await db.query(`grant select, insert, update, delete on public.shared to ${role.name}`);
  await db.query(`grant usage on sequence public.shared_id_seq to ${role.name}`);
  return role;
}

/**
 * A login role with CREATEROLE, optionally a member of pgvpd_admin. From PostgreSQL 16 on,
 * CREATEROLE alone no longer lets a role alter roles it did not create: it then also gets ADMIN
 * OPTION on `managed`, so that PostgreSQL's own rules let it do what the tests ask.
 */
async function manager(
  t: TestLike,
  managed: string,
  admin: boolean,
): Promise<{ name: string; client: pg.Client }> {
  const name = `pgvpd_manager_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('base64url');
  await db.query(
    `create role ${name} login password '${password}' createrole nosuperuser nobypassrls${admin ? ' in role pgvpd_admin' : ''}`,
  );
  if (db.server.version >= 16) await db.query(`grant ${managed} to ${name} with admin option`);
  t.teardown(() => db.query(`drop role if exists ${name}`).catch(() => undefined));
  const client = await connect(db.urlFor(name, password));
  t.teardown(() => client.end());
  return { name, client };
}

/** Whether `role` can log in with `password`. */
async function logsIn(role: string, password: string): Promise<boolean> {
  return connect(db.urlFor(role, password)).then(
    async (client) => {
      await client.end();
      return true;
    },
    () => false,
  );
}

async function roleSettings(role: string): Promise<string[]> {
  const { rows } = await db.query<{ settings: string[] | null }>(
    `select s.setconfig as settings from pg_db_role_setting s
      where s.setrole = (select oid from pg_roles where rolname = $1)`,
    [role],
  );
  return rows.flatMap((r) => r.settings ?? []);
}

t.test(
  `finding 6: a tenant role cannot change its shared role's password (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const client = await tenant.connect();
    t.teardown(() => client.end());
    const statements = [
      `alter role current_user password 'taken over'`,
      `alter user current_user password 'taken over'`,
      `alter role session_user password 'taken over'`,
      `alter role current_role with password 'taken over'`,
      `alter role ${tenant.name} encrypted password 'taken over'`,
      `alter user ${tenant.name} password null`,
    ];
    for (const sql of statements) {
      t.same(await outcome(client.query(sql)), guard ? alterRefused(tenant.name) : 'ok', sql);
    }
    if (guard) {
      t.ok(await logsIn(tenant.name, tenant.password), 'the co-tenants still log in');
      t.notOk(await logsIn(tenant.name, 'taken over'), 'the attacker’s password does not work');
    } else {
      // What the SQL path cannot stop: the last statement cleared the shared role's password.
      t.notOk(await logsIn(tenant.name, tenant.password), 'the SQL path: co-tenants locked out');
    }
  },
);

t.test(
  `finding 6: a tenant role cannot turn row_security off, or change any setting, for every session of its shared role (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const client = await tenant.connect();
    t.teardown(() => client.end());
    const statements = [
      `alter role current_user set row_security = off`,
      `alter role current_user in database ${db.name} set row_security = off`,
      `alter user ${tenant.name} set statement_timeout = 0`,
      `alter role current_user set search_path from current`,
      `alter role current_user reset statement_timeout`,
      `alter role session_user in database ${db.name} reset all`,
      `alter role current_user set row_security = off`,
    ];
    for (const sql of statements) {
      t.same(await outcome(client.query(sql)), guard ? alterRefused(tenant.name) : 'ok', sql);
    }
    const next = await tenant.connect();
    t.teardown(() => next.end());
    const { rows } = await next.query<{ row_security: string }>('show row_security');
    const settings = await roleSettings(tenant.name);
    if (guard) {
      t.same(settings, [], 'no setting was stored for the role');
      t.same(rows, [{ row_security: 'on' }], 'a new session of the role has row_security on');
    } else {
      t.ok(settings.includes('row_security=off'), 'the SQL path: stored for the role');
      t.same(rows, [{ row_security: 'off' }], 'the SQL path: every new session has it off');
    }
  },
);

t.test(
  `finding 6: a CREATEROLE role that is not pgvpd_admin cannot alter, reconfigure or rename a tenant role (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const { name, client } = await manager(t, tenant.name, false);
    const statements = [
      `alter role ${tenant.name} password 'taken over'`,
      `alter role ${tenant.name} valid until '2000-01-01'`,
      `alter role ${tenant.name} connection limit 1`,
      `alter role ${tenant.name} nologin`,
      `alter group ${tenant.name} add user ${name}`,
      `alter role ${tenant.name} set row_security = off`,
      `alter role ${tenant.name} in database ${db.name} reset all`,
    ];
    for (const sql of statements) {
      t.same(await outcome(client.query(sql)), guard ? alterRefused(tenant.name) : 'ok', sql);
    }
    const rename = `alter role ${tenant.name} rename to ${tenant.name}_renamed`;
    t.same(
      await outcome(client.query(rename)),
      guard ? alterRefused(tenant.name) : 'ok',
      rename,
    );
    if (!guard) await db.query(`alter role ${tenant.name}_renamed rename to ${tenant.name}`);
    const { rows } = await db.query<{ login: boolean; limit: number }>(
      'select rolcanlogin as login, rolconnlimit as limit from pg_roles where rolname = $1',
      [tenant.name],
    );
    t.same(
      rows,
      [guard ? { login: true, limit: -1 } : { login: false, limit: 1 }],
      guard ? 'the tenant role is as it was' : 'the SQL path: the tenant role was changed',
    );
  },
);

t.test('a superuser and a member of pgvpd_admin (with CREATEROLE) may alter a tenant role', async (t) => {
  const tenant = await tenantRole(t);
  const { client } = await manager(t, tenant.name, true);
  const asAdmin = [
    `alter role ${tenant.name} connection limit 10`,
    `alter role ${tenant.name} set statement_timeout = '5s'`,
    `alter role ${tenant.name} in database ${db.name} set lock_timeout = '1s'`,
    `alter role ${tenant.name} reset statement_timeout`,
    `alter role ${tenant.name} rename to ${tenant.name}_renamed`,
    `alter role ${tenant.name}_renamed rename to ${tenant.name}`,
    `alter role ${tenant.name} password '${tenant.password}'`,
  ];
  for (const sql of asAdmin) {
    t.same(await outcome(client.query(sql)), 'ok', `pgvpd_admin member: ${sql}`);
  }
  const asSuperuser = [
    `alter role ${tenant.name} connection limit -1`,
    `alter role ${tenant.name} in database ${db.name} reset all`,
    `alter role ${tenant.name} rename to ${tenant.name}_renamed`,
    `alter role ${tenant.name}_renamed rename to ${tenant.name}`,
    `alter role ${tenant.name} password '${tenant.password}'`,
  ];
  for (const sql of asSuperuser) {
    t.same(await outcome(db.query(sql)), 'ok', `superuser: ${sql}`);
  }
  t.ok(await logsIn(tenant.name, tenant.password), 'the tenant role still logs in');
});

t.test('a role that is not a tenant role may still alter itself', async (t) => {
  const name = `pgvpd_plain_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('base64url');
  await db.query(`create role ${name} login password '${password}' nosuperuser nobypassrls`);
  t.teardown(() => db.query(`drop role if exists ${name}`).catch(() => undefined));
  const client = await connect(db.urlFor(name, password));
  t.teardown(() => client.end());
  for (const sql of [
    `alter role current_user set row_security = off`,
    `alter role current_user reset all`,
    `alter role current_user password '${password}x'`,
  ]) {
    t.same(await outcome(client.query(sql)), 'ok', sql);
  }
  t.ok(await logsIn(name, `${password}x`), 'its new password works');
});

const strongModes = [
  'SHARE UPDATE EXCLUSIVE',
  'SHARE',
  'SHARE ROW EXCLUSIVE',
  'EXCLUSIVE',
  'ACCESS EXCLUSIVE',
];

/** Runs `sql` in a transaction on `client`, then rolls back; the outcome of `sql`. */
async function inTransaction(client: pg.Client, sql: string): Promise<Outcome> {
  await client.query('begin');
  try {
    return await outcome(client.query(sql));
  } finally {
    await client.query('rollback');
  }
}

t.test(
  `finding 6: a tenant role cannot lock a shared table stronger than ROW EXCLUSIVE (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const client = await tenant.connect();
    t.teardown(() => client.end());
    for (const mode of strongModes) {
      for (const sql of [
        `lock table public.shared in ${mode.toLowerCase()} mode`,
        `lock public.shared in ${mode} mode nowait`,
      ]) {
        t.same(await inTransaction(client, sql), guard ? lockRefused(mode) : 'ok', sql);
      }
    }
    for (const sql of [
      'lock table public.shared',
      'lock table only public.shared, public.shared',
      `do $$ begin lock table public.shared in exclusive mode; end $$`,
    ]) {
      const mode = sql.includes('exclusive mode') ? 'EXCLUSIVE' : 'ACCESS EXCLUSIVE';
      t.same(await inTransaction(client, sql), guard ? lockRefused(mode) : 'ok', sql);
    }
  },
);

t.test(
  `finding 6: one tenant's LOCK TABLE does not block another tenant sharing its role (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const attacker = await tenant.connect();
    const other = await tenant.connect();
    t.teardown(() => Promise.all([attacker.end(), other.end()]));
    await attacker.query('begin');
    const lock = await outcome(
      attacker.query('lock table public.shared in access exclusive mode'),
    );
    t.same(lock, guard ? lockRefused('ACCESS EXCLUSIVE') : 'ok', 'the attacker’s lock');
    // The attacker's transaction stays open while the other tenant works.
    await other.query(`set lock_timeout = '200ms'`);
    const work = await outcome(
      other.query(`insert into public.shared (tenant_id, body) values ('b', 'b2')`),
    );
    t.same(
      work,
      guard
        ? 'ok'
        : { code: '55P03', message: 'canceling statement due to lock timeout', hint: undefined },
      guard ? 'the other tenant’s insert goes through' : 'the SQL path: the other tenant waits',
    );
    await attacker.query('rollback');
  },
);

t.test(
  `finding 6: a tenant role cannot lock a shared table through SET ROLE to a group role (${path})`,
  async (t) => {
    const tenant = await tenantRole(t);
    const group = `pgvpd_group_${randomBytes(4).toString('hex')}`;
    await db.query(`create role ${group} nologin nosuperuser nobypassrls`);
    await db.query(`grant select, update, delete on public.shared to ${group}`);
    await db.query(`grant ${group} to ${tenant.name}`);
    t.teardown(async () => {
      await db.query(`drop owned by ${group}`).catch(() => undefined);
      await db.query(`drop role if exists ${group}`).catch(() => undefined);
    });
    const client = await tenant.connect();
    t.teardown(() => client.end());
    await client.query(`set role ${group}`);
    const sql = 'lock table public.shared in access exclusive mode';
    t.same(
      await inTransaction(client, sql),
      guard ? lockRefused('ACCESS EXCLUSIVE') : 'ok',
      `after SET ROLE ${group}: ${sql}`,
    );
  },
);

t.test(
  'a SECURITY DEFINER function owned by a role that is not a tenant role may lock for a tenant',
  async (t) => {
    const tenant = await tenantRole(t);
    const owner = `pgvpd_owner_${randomBytes(4).toString('hex')}`;
    const fn = `public.lock_shared_${randomBytes(4).toString('hex')}`;
    await db.query(`create role ${owner} nologin nosuperuser nobypassrls`);
    await db.query(`grant update on public.shared to ${owner}`);
    await db.query(`
      create function ${fn}() returns void language plpgsql security definer set search_path = ''
      as $$ begin lock table public.shared in access exclusive mode; end $$;
      alter function ${fn}() owner to ${owner};
      grant execute on function ${fn}() to ${tenant.name};
    `);
    t.teardown(async () => {
      await db.query(`drop function if exists ${fn}()`).catch(() => undefined);
      await db.query(`drop owned by ${owner}`).catch(() => undefined);
      await db.query(`drop role if exists ${owner}`).catch(() => undefined);
    });
    const client = await tenant.connect();
    t.teardown(() => client.end());
    t.same(await inTransaction(client, `select ${fn}()`), 'ok', `select ${fn}()`);
  },
);

t.test('ACCESS SHARE, ROW SHARE and ROW EXCLUSIVE locks stay allowed to tenant roles', async (t) => {
  const tenant = await tenantRole(t);
  const client = await tenant.connect();
  t.teardown(() => client.end());
  for (const mode of ['access share', 'row share', 'row exclusive']) {
    const sql = `lock table public.shared in ${mode} mode`;
    t.same(await inTransaction(client, sql), 'ok', sql);
  }
  t.same(
    await inTransaction(client, 'select * from public.shared for update'),
    'ok',
    'SELECT … FOR UPDATE (ROW SHARE)',
  );
});

t.test('a superuser, pgvpd_admin’s members and other roles that are not tenant roles may take any lock', async (t) => {
  const name = `pgvpd_plain_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(9).toString('base64url');
  await db.query(`create role ${name} login password '${password}' nosuperuser nobypassrls`);
  await db.query(`grant select, update on public.shared to ${name}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  const plain = await connect(db.urlFor(name, password));
  t.teardown(() => plain.end());
  const superuser = await connect(db.url);
  t.teardown(() => superuser.end());
  const adminRole = await loginRole(t, db, 'admin');
  await db.query(`grant select, update on public.shared to ${adminRole.name}`);
  const { rows } = await db.query<{ member: boolean }>(
    `select pg_has_role($1, 'pgvpd_tenant', 'member') as member`,
    [adminRole.name],
  );
  t.same(rows, [{ member: true }], 'a member of pgvpd_admin is a member of pgvpd_tenant too');
  const admin = await adminRole.connect();
  t.teardown(() => admin.end());
  for (const mode of strongModes) {
    const sql = `lock table public.shared in ${mode} mode`;
    t.same(await inTransaction(plain, sql), 'ok', `not a tenant role: ${sql}`);
    t.same(await inTransaction(admin, sql), 'ok', `a member of pgvpd_admin: ${sql}`);
    t.same(await inTransaction(superuser, sql), 'ok', `superuser: ${sql}`);
  }
});
