// pgvpd.app_role_verifier (migration 000017): the SCRAM verifier the proxy checks a pooled
// app-mode client against, and whose keys let it log in upstream without a password. Only for a
// registered application role that may be served; for every other name, known or not, nothing
// at all; for an eligible role without a SCRAM verifier, which problem it has. Only pgvpd_proxy
// may call it, and nothing of the caller's session (search_path) changes what it reads.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { parseVerifier } from '../../proxy/auth/scram-verifier.js';
import { connect, installPgvpd, loginRole, scratchRole, sqlstate } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const { db } = f;

interface Lookup {
  verifier: string | null;
  problem: string | null;
}

async function lookup(role: string): Promise<Lookup> {
  const { rows } = await f.proxy.query<Lookup>(
    'select verifier, problem from pgvpd.app_role_verifier($1)',
    [role],
  );
  t.equal(rows.length, 1, `one row for ${JSON.stringify(role)}`);
  return rows[0]!;
}

async function stored(role: string): Promise<string | null> {
  const { rows } = await db.query<{ rolpassword: string | null }>(
    'select rolpassword from pg_authid where rolname = $1',
    [role],
  );
  return rows[0]?.rolpassword ?? null;
}

/** A NOLOGIN role with `options`, dropped at the end of `tt`; its name. */
async function groupRole(tt: TestLike, options: string): Promise<string> {
  const name = `group_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${name} nologin ${options}`);
  tt.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  return name;
}

const nothing: Lookup = { verifier: null, problem: null };

/** A registered application role made with `options`, dropped at the end of `t`. */
async function appRole(tt: TestLike, options: string) {
  const role = await scratchRole(tt, db, options);
  await db.query('select pgvpd.add_app_role($1)', [role.name]);
  return role;
}

t.test('a registered application role: its own SCRAM verifier, as pg_authid has it', async (t) => {
  const got = await lookup(f.app.name);
  const verifier = await stored(f.app.name);
  t.match(verifier, /^SCRAM-SHA-256\$/, 'the role has a SCRAM verifier');
  t.same(got, { verifier, problem: null });
  t.ok(parseVerifier(got.verifier ?? ''), 'the proxy parses it');
});

t.test('after ALTER ROLE … PASSWORD the new verifier comes back', async (t) => {
  const role = await appRole(t, 'nosuperuser nobypassrls noinherit');
  const before = await lookup(role.name);
  await db.query(`alter role ${role.name} password '${randomBytes(9).toString('hex')}'`);
  const after = await lookup(role.name);
  t.not(after.verifier, before.verifier, 'another verifier');
  t.same(after, { verifier: await stored(role.name), problem: null });
});

t.test('names that may not be served get nothing, like an unknown one', async (t) => {
  t.same(await lookup(`no_such_role_${randomBytes(4).toString('hex')}`), nothing, 'unknown role');
  t.same(await lookup(f.app.name.toUpperCase()), nothing, 'the name in another case');
  t.same(await lookup(`${f.app.name}' or 'a' = 'a`), nothing, 'quotes are part of the name');
  t.same(await lookup(''), nothing, 'empty name');

  const unregistered = await scratchRole(t, db, 'nosuperuser nobypassrls');
  t.same(await lookup(unregistered.name), nothing, 'not a registered application role');

  const superuser = await appRole(t, 'superuser');
  t.same(await lookup(superuser.name), nothing, 'SUPERUSER');
  const bypass = await appRole(t, 'nosuperuser bypassrls');
  t.same(await lookup(bypass.name), nothing, 'BYPASSRLS');

  const admins = await groupRole(t, 'superuser');
  const viaSuperuser = await appRole(t, `nosuperuser nobypassrls noinherit in role ${admins}`);
  t.same(await lookup(viaSuperuser.name), nothing, 'a member of a superuser role');
  const bypassers = await groupRole(t, 'bypassrls');
  const group = await groupRole(t, `in role ${bypassers}`);
  const viaBypass = await appRole(t, `nosuperuser nobypassrls noinherit in role ${group}`);
  t.same(await lookup(viaBypass.name), nothing, 'a member of a BYPASSRLS role, two levels up');
  for (const own of ['pgvpd_proxy', 'pgvpd_admin', 'pgvpd_api']) {
    const member = await appRole(t, `nosuperuser nobypassrls noinherit in role ${own}`);
    t.same(await lookup(member.name), nothing, `a member of ${own}`);
  }
  t.same(await lookup('pgvpd_proxy'), nothing, 'pgvpd_proxy itself');
  const createrole = await appRole(t, 'nosuperuser nobypassrls createrole');
  t.same(await lookup(createrole.name), nothing, 'CREATEROLE');
  const replication = await appRole(t, 'nosuperuser nobypassrls replication');
  t.same(await lookup(replication.name), nothing, 'REPLICATION');
  const roleMakers = await groupRole(t, 'createrole');
  const viaCreaterole = await appRole(t, `nosuperuser nobypassrls noinherit in role ${roleMakers}`);
  t.same(await lookup(viaCreaterole.name), nothing, 'a member of a CREATEROLE role');
  for (const predefined of ['pg_write_server_files', 'pg_execute_server_program']) {
    const member = await appRole(t, `nosuperuser nobypassrls noinherit in role ${predefined}`);
    t.same(await lookup(member.name), nothing, `a member of ${predefined}`);
  }

  const nologin = await groupRole(t, 'nosuperuser nobypassrls');
  await db.query('select pgvpd.add_app_role($1)', [nologin]);
  t.same(await lookup(nologin), nothing, 'NOLOGIN');
  const expired = await appRole(t, `nosuperuser nobypassrls valid until '2001-01-01'`);
  t.same(await lookup(expired.name), nothing, 'a password past its VALID UNTIL');
  const valid = await appRole(t, `nosuperuser nobypassrls valid until 'infinity'`);
  t.same(
    await lookup(valid.name),
    { verifier: await stored(valid.name), problem: null },
    'VALID UNTIL infinity is served',
  );

  const connectAs = await appRole(t, 'nosuperuser nobypassrls noinherit');
  const { rows } = await db.query<{ id: string }>(
    `select pgvpd.org_create('Verifier org', $1) as id`,
    [`verifier-org-${randomBytes(3).toString('hex')}`],
  );
  const org = rows[0]!.id;
  t.teardown(() => db.query('select pgvpd.org_delete($1)', [org]).catch(() => undefined));
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    org,
    'alice',
    await stored(connectAs.name),
    connectAs.name,
  ]);
  t.same(await lookup(connectAs.name), nothing, "an org's connect_as role");
});

t.test('an eligible role without a SCRAM verifier: the problem, no verifier', async (t) => {
  const md5 = await appRole(t, 'nosuperuser nobypassrls');
  // An MD5 hash as PostgreSQL stores it, given as such: 'md5' || md5(password || role name).
  const hash = createHash('md5').update(`secret${md5.name}`).digest('hex');
  await db.query(`alter role ${md5.name} password 'md5${hash}'`);
  t.match(await stored(md5.name), /^md5[0-9a-f]{32}$/, 'stored as MD5');
  t.same(await lookup(md5.name), { verifier: null, problem: 'md5' });

  const none = await appRole(t, 'nosuperuser nobypassrls');
  await db.query(`alter role ${none.name} password null`);
  t.same(await lookup(none.name), { verifier: null, problem: 'no password' });
});

t.test('only pgvpd_proxy (and pgvpd_admin, its owner) may call it', async (t) => {
  const app = await f.app.connect();
  t.teardown(() => app.end());
  t.equal(
    await sqlstate(app.query('select * from pgvpd.app_role_verifier($1)', [f.app.name])),
    '42501',
    'an application role: permission denied',
  );
  const unrelated = await scratchRole(t, db, 'nosuperuser nobypassrls');
  const other = await connect(unrelated.url);
  t.teardown(() => other.end());
  t.equal(
    await sqlstate(other.query('select * from pgvpd.app_role_verifier($1)', [f.app.name])),
    '42501',
    'any other role: permission denied',
  );
  // pgvpd_admin owns it (as it owns the tables its answer depends on): its members, trusted with
  // all of pgvpd's data, may call it too.
  const admin = await loginRole(t, db, 'admin');
  const adminClient = await admin.connect();
  t.teardown(() => adminClient.end());
  const { rows } = await adminClient.query<Lookup>(
    'select verifier, problem from pgvpd.app_role_verifier($1)',
    [f.app.name],
  );
  t.same(rows, [{ verifier: await stored(f.app.name), problem: null }], 'pgvpd_admin may');
});

t.test("the caller's search_path changes nothing", async (t) => {
  const schema = `evil_${randomBytes(3).toString('hex')}`;
  await db.query(`create schema ${schema}`);
  t.teardown(() => db.query(`drop schema ${schema} cascade`));
  // Look-alikes of everything the function reads, in a schema the caller puts first.
  await db.query(`
    create table ${schema}.pg_authid (rolname name, rolpassword text);
    create table ${schema}.app_role (role_name name);
    create function ${schema}.pg_has_role(oid, oid, text) returns boolean language sql as 'select false';
    create function ${schema}.now() returns timestamptz language sql as $$select '1999-01-01'::timestamptz$$;
    grant usage on schema ${schema} to public;
  `);
  const expected = await lookup(f.app.name);
  await f.proxy.query(`set search_path = ${schema}, pg_catalog, public`);
  t.teardown(() => f.proxy.query('reset search_path'));
  t.same(await lookup(f.app.name), expected, 'the same verifier');
  const superuser = await appRole(t, 'superuser');
  t.same(await lookup(superuser.name), nothing, 'a superuser still gets nothing');
});

t.test('only the catalog-reading part is a superuser’s, also after setup runs again', async (t) => {
  const owners = async () =>
    (
      await db.query<{ fn: string; owner: string; rolsuper: boolean }>(
        `select p.oid::regprocedure::text as fn, r.rolname as owner, r.rolsuper
           from pg_proc p join pg_roles r on r.oid = p.proowner
          where p.oid in ('pgvpd.app_role_verifier(text)'::regprocedure,
                          'pgvpd_private.role_scram_verifier(text)'::regprocedure)
          order by 1`,
      )
    ).rows.map((row) => [row.fn, row.owner === 'pgvpd_admin' ? 'pgvpd_admin' : row.rolsuper]);
  const expected = [
    ['pgvpd.app_role_verifier(text)', 'pgvpd_admin'],
    ['pgvpd_private.role_scram_verifier(text)', true],
  ];
  t.same(await owners(), expected, 'after the first setup');
  await installPgvpd(db);
  t.same(await owners(), expected, 'after setup.sql ran again (its ownership blocks included)');
  t.same(
    await lookup(f.app.name),
    { verifier: await stored(f.app.name), problem: null },
    'and the lookup still reads pg_authid',
  );
});

t.test('the catalog-reading part: pgvpd_admin only', async (t) => {
  t.equal(
    await sqlstate(
      f.proxy.query('select * from pgvpd_private.role_scram_verifier($1)', [f.app.name]),
    ),
    '42501',
    'pgvpd_proxy may not call it directly',
  );
  const app = await f.app.connect();
  t.teardown(() => app.end());
  t.equal(
    await sqlstate(app.query('select * from pgvpd_private.role_scram_verifier($1)', [f.app.name])),
    '42501',
    'nor an application role',
  );
});

t.test('pgvpd_admin calling the catalog part directly: tenant roles only', async (t) => {
  const admin = await loginRole(t, db, 'admin');
  const client = await admin.connect();
  t.teardown(() => client.end());
  const direct = async (role: string) =>
    (
      await client.query<Lookup>(
        'select verifier, problem from pgvpd_private.role_scram_verifier($1)',
        [role],
      )
    ).rows[0];
  t.same(
    await direct(f.app.name),
    { verifier: await stored(f.app.name), problem: null },
    'a registered application role (a pgvpd_tenant member)',
  );
  const unmarked = await scratchRole(t, db, 'nosuperuser nobypassrls');
  t.same(await direct(unmarked.name), nothing, 'a role no database registered: nothing');
});

t.test('setup takes back what pgvpd_admin did to the catalog part', async (t) => {
  const admin = await loginRole(t, db, 'admin');
  const client = await admin.connect();
  t.teardown(() => client.end());
  const grantee = await scratchRole(t, db, 'nosuperuser nobypassrls');
  // The schema's owner may drop the superuser's function and put its own in its place.
  await client.query('set role pgvpd_admin');
  await client.query(`
    drop function pgvpd_private.role_scram_verifier(text);
    create function pgvpd_private.role_scram_verifier(p_role text, out verifier text, out problem text)
      language sql stable as $$ select 'forged'::text, null::text $$;
    grant execute on function pgvpd_private.role_scram_verifier(text) to ${grantee.name};
  `);
  t.teardown(() => installPgvpd(db));
  await installPgvpd(db);
  const { rows } = await db.query<{ super: boolean; granted: boolean; body: boolean }>(
    `select r.rolsuper as super,
            has_function_privilege($1, p.oid, 'EXECUTE') as granted,
            p.prosrc like '%pg_authid%' as body
       from pg_proc p join pg_roles r on r.oid = p.proowner
      where p.oid = 'pgvpd_private.role_scram_verifier(text)'::regprocedure`,
    [grantee.name],
  );
  t.same(rows, [{ super: true, granted: false, body: true }], "the superuser's again, ungranted");
  t.same(
    await lookup(f.app.name),
    { verifier: await stored(f.app.name), problem: null },
    'and the lookup reads pg_authid',
  );
});

t.test('pgvpd_admin cannot make a lookup run its code as a superuser', async (t) => {
  // pgvpd_admin owns pgvpd_private and its tables: it may put a view of its own in place of
  // app_role, calling a function of its own. The lookup must never run it as a superuser.
  const admin = await loginRole(t, db, 'admin');
  const client = await admin.connect();
  t.teardown(() => client.end());
  const suffix = randomBytes(3).toString('hex');
  await client.query('set role pgvpd_admin');
  await client.query(`
    create function pgvpd_private.zz_probe_${suffix}() returns boolean language plpgsql volatile as $$
    begin
      if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
        execute pg_catalog.format('alter role %I superuser', '${admin.name}');
      end if;
      return true;
    end $$;
    alter table pgvpd_private.app_role rename to app_role_${suffix};
    create view pgvpd_private.app_role as
      select role_name from pgvpd_private.app_role_${suffix} where pgvpd_private.zz_probe_${suffix}();
  `);
  t.teardown(async () => {
    await db.query(`alter role ${admin.name} nosuperuser`);
    await db.query(`drop view if exists pgvpd_private.app_role`);
    await db.query(`alter table pgvpd_private.app_role_${suffix} rename to app_role`);
    await db.query(`drop function pgvpd_private.zz_probe_${suffix}()`);
  });
  t.same(
    await lookup(f.app.name),
    { verifier: await stored(f.app.name), problem: null },
    'the lookup answers, through the swapped view',
  );
  const { rows } = await db.query<{ rolsuper: boolean }>(
    'select rolsuper from pg_roles where rolname = $1',
    [admin.name],
  );
  t.same(rows, [{ rolsuper: false }], 'and the view’s function did not run as a superuser');
});
