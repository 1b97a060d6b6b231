// pgvpd.app_role_verifier (migration 000017): the SCRAM verifier the proxy checks a pooled
// app-mode client against, and whose keys let it log in upstream without a password. Only for a
// registered application role that may be served; for every other name, known or not, nothing
// at all; for an eligible role without a SCRAM verifier, which problem it has. Only pgvpd_proxy
// may call it, and nothing of the caller's session (search_path) changes what it reads.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { parseVerifier } from '../../proxy/auth/scram-verifier.js';
import { installPgvpd, loginRole, scratchRole, sqlstate } from '../support/pgvpd.js';
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

t.test('only pgvpd_proxy may call it', async (t) => {
  const app = await f.app.connect();
  t.teardown(() => app.end());
  t.equal(
    await sqlstate(app.query('select * from pgvpd.app_role_verifier($1)', [f.app.name])),
    '42501',
    'an application role: permission denied',
  );
  const admin = await loginRole(t, db, 'admin');
  const adminClient = await admin.connect();
  t.teardown(() => adminClient.end());
  t.equal(
    await sqlstate(adminClient.query('select * from pgvpd.app_role_verifier($1)', [f.app.name])),
    '42501',
    'a member of pgvpd_admin: permission denied',
  );
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

t.test('owned by a superuser, also after setup runs again', async (t) => {
  const owner = async () =>
    (
      await db.query<{ rolsuper: boolean }>(
        `select r.rolsuper from pg_proc p join pg_roles r on r.oid = p.proowner
          where p.oid = 'pgvpd.app_role_verifier(text)'::regprocedure`,
      )
    ).rows[0]?.rolsuper;
  t.equal(await owner(), true, 'after the first setup');
  await installPgvpd(db);
  t.equal(await owner(), true, 'after setup.sql ran again (its ownership blocks included)');
  t.same(
    await lookup(f.app.name),
    { verifier: await stored(f.app.name), problem: null },
    'and it still reads pg_authid',
  );
});
