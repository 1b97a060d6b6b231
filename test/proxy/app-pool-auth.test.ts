// Pooled app mode (issue 15): which roles the proxy authenticates and serves, in session and in
// transaction mode. An application role whose password is stored as MD5, or that has none, is
// refused with FATAL 28000 naming the fix (and served once the fix is applied); a SUPERUSER, a
// BYPASSRLS role and a member (direct or not) of a BYPASSRLS role are answered with the very
// 28P01 of a wrong password, even with the right one, and the pool never logs in as them. A
// client's startup search_path and options never reach the verifier lookup or the control
// connection: look-alikes of every name the lookup, the switch and the reset use, in a schema
// `evil` the client puts first (before pg_catalog), record nothing, and a look-alike verifier
// for another password changes nothing (the lookup's answer is the real one).
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { loginRole, type LoginRole } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';
import { failure, scramHalfway, type Failure } from './org-support.js';

const modes = ['session', 'transaction'] as const;
type Mode = (typeof modes)[number];

function pooledFixture(t: TestLike, mode: Mode): Promise<ProxyFixture> {
  return proxyFixture(t, { pool_mode: mode, pool_size: 2, pool_checkout_timeout: 5 });
}

/** What a wrong password gets, and any name the proxy will not serve. */
const refused = (user: string): Failure => ({
  severity: 'FATAL',
  code: '28P01',
  message: `password authentication failed for user "${user}"`,
  hint: undefined,
});

/** proxyErrors.appRoleNeedsScram, as the client reads it. */
const needsScram = (role: string, problem: 'an MD5 password' | 'no password'): Failure => ({
  severity: 'FATAL',
  code: '28000',
  message: `role "${role}" has ${problem}; pgvpd's pooled app mode checks SCRAM-SHA-256 passwords only`,
  hint: `Set the role's password again with password_encryption = 'scram-sha-256' (the default since PostgreSQL 14): ALTER ROLE ${role} PASSWORD '...';`,
});

/** The roles the pool has a key for, and how many sessions it ever opened. */
function poolSeen(f: ProxyFixture): { roles: string[]; opened: number } {
  const stats = f.proxy.runtime.pooling?.pool.stats();
  return { roles: stats?.keys.map((key) => key.role) ?? [], opened: stats?.opened ?? -1 };
}

/** Backends of `role` in the test database, as the superuser sees them. */
async function backendsOf(f: ProxyFixture, role: string): Promise<number> {
  const { rows } = await f.db.query<{ n: number }>(
    'select count(*)::int as n from pg_stat_activity where datname = $1 and usename = $2',
    [f.db.name, role],
  );
  return rows[0]!.n;
}

/** A registered application role of this test, allowed to read the notes. */
async function appRole(t: TestLike, f: ProxyFixture): Promise<LoginRole> {
  const role = await loginRole(t, f.db, 'app');
  await f.db.query(`grant select on public.notes to ${role.name}`);
  return role;
}

/** A NOLOGIN role of this test with `options`, dropped at its end. */
async function groupRole(t: TestLike, f: ProxyFixture, options: string): Promise<string> {
  const name = `pgvpd_group_${randomBytes(4).toString('hex')}`;
  await f.db.query(`create role ${name} nologin ${options}`);
  t.teardown(() => f.db.query(`drop role if exists ${name}`).catch(() => undefined));
  return name;
}

for (const mode of modes) {
  t.test(
    `${mode} mode: an MD5 role and a role with no password get FATAL 28000 naming the fix`,
    async (t) => {
      const f = await pooledFixture(t, mode);
      const md5 = await appRole(t, f);
      // The MD5 hash set directly (PostgreSQL 18 warns that MD5 is deprecated, and stores it).
      const hash = createHash('md5').update(`${md5.password}${md5.name}`).digest('hex');
      await f.db.query(`alter role ${md5.name} password 'md5${hash}'`);
      const stored = await f.db.query<{ kind: string }>(
        'select left(rolpassword, 3) as kind from pg_authid where rolname = $1',
        [md5.name],
      );
      t.same(stored.rows, [{ kind: 'md5' }], 'the role’s password is stored as MD5');
      const none = await appRole(t, f);
      await f.db.query(`alter role ${none.name} password null`);

      t.same(
        await failure(f.connect(`${md5.name}.acme`, md5.password)),
        needsScram(md5.name, 'an MD5 password'),
        'MD5: FATAL 28000 with the ALTER ROLE that fixes it',
      );
      t.same(
        await failure(f.connect(`${none.name}.acme`, none.password)),
        needsScram(none.name, 'no password'),
        'no password: FATAL 28000 with the ALTER ROLE that fixes it',
      );
      t.same(poolSeen(f), { roles: [], opened: 0 }, 'the pool logged in as neither');
      t.equal(await backendsOf(f, md5.name), 0, 'no backend of the MD5 role');
      t.equal(await backendsOf(f, none.name), 0, 'no backend of the role without password');

      // The hint's fix: the password set again under the server's scram-sha-256.
      await f.db.query(`alter role ${md5.name} password '${md5.password}'`);
      const fixed = await f.connect(`${md5.name}.acme`, md5.password);
      t.same(await visible(fixed), { acme: 2, globex: 0, total: 2 }, 'served once it is SCRAM');
      t.same(poolSeen(f), { roles: [md5.name], opened: 1 }, 'now the pool logs in as it');
    },
  );

  t.test(
    `${mode} mode: superusers, BYPASSRLS roles and their members get a wrong password’s 28P01`,
    async (t) => {
      const f = await pooledFixture(t, mode);
      const superuser = await appRole(t, f);
      await f.db.query(`alter role ${superuser.name} superuser`);
      const bypassrls = await appRole(t, f);
      await f.db.query(`alter role ${bypassrls.name} bypassrls`);
      const member = await appRole(t, f);
      const bypassGroup = await groupRole(t, f, 'bypassrls');
      await f.db.query(`grant ${bypassGroup} to ${member.name}`);
      // A member through a role that is itself plain: membership counts at any depth.
      const indirect = await appRole(t, f);
      const middle = await groupRole(t, f, '');
      await f.db.query(`grant ${bypassGroup} to ${middle}`);
      await f.db.query(`grant ${middle} to ${indirect.name}`);

      const cases = [
        ['a SUPERUSER app role', superuser],
        ['a BYPASSRLS app role', bypassrls],
        ['a member of a BYPASSRLS role', member],
        ['a member of a member of a BYPASSRLS role', indirect],
      ] as const;
      for (const [what, role] of cases) {
        const user = `${role.name}.acme`;
        const right = await failure(f.connect(user, role.password));
        t.same(right, refused(role.name), `${what}: 28P01 with its right password`);
        t.same(
          await failure(f.connect(user, 'wrong-password')),
          right,
          `${what}: the same answer as a wrong password`,
        );
        t.equal(await backendsOf(f, role.name), 0, `${what}: no backend of the role`);
      }
      t.same(poolSeen(f), { roles: [], opened: 0 }, 'the pool never logged in as any of them');

      // The same fixture serves a plain application role: the refusals above are the roles'.
      const served = await f.connect(f.userFor('globex'));
      t.same(await visible(served), { acme: 0, globex: 3, total: 3 });
      t.same(poolSeen(f), { roles: [f.app.name], opened: 1 }, 'only the plain role is pooled');
    },
  );
}

/** The password whose verifier the look-alike app_role_verifier returns. */
const evilPassword = 'evil-password';
/** The client's search_path: the look-alikes first, before pg_catalog itself. */
const evilPath = 'evil, pg_catalog';

/**
 * Schema `evil`: look-alikes of the names the proxy's statements use, each recording its call in
 * evil.calls (a superuser's definer function, callable by anyone): the lookup's functions and
 * the tables behind them, the switch and the reset's functions, and a `text` domain whose check
 * records, which the lookup's `$1::text` would become under this search_path.
 */
async function plantLookAlikes(f: ProxyFixture): Promise<void> {
  const verifier = makeVerifier(evilPassword);
  await f.db.query(`
    create schema evil;
    grant usage on schema evil to public;
    create table evil.calls (name text, by_user text, application text, path text);
    create function evil.record(p_name text) returns boolean
      language sql volatile security definer set search_path = ''
      as $$
        insert into evil.calls
          values (p_name, session_user, pg_catalog.current_setting('application_name'),
                  pg_catalog.current_setting('search_path'))
        returning true
      $$;
    grant execute on function evil.record(text) to public;
    create domain evil.text as pg_catalog.text check (evil.record('text'));
    create function evil.app_role_verifier(p_role pg_catalog.text, out verifier pg_catalog.text,
                                           out problem pg_catalog.text)
      language sql volatile
      as $$ select '${verifier}'::pg_catalog.text, null::pg_catalog.text
              where evil.record('app_role_verifier') $$;
    create function evil.role_scram_verifier(p_role pg_catalog.text, out verifier pg_catalog.text,
                                             out problem pg_catalog.text)
      language sql volatile
      as $$ select '${verifier}'::pg_catalog.text, null::pg_catalog.text
              where evil.record('role_scram_verifier') $$;
    create function evil.proxy_mock_secret() returns bytea language sql volatile
      as $$ select pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex')
              where evil.record('proxy_mock_secret') $$;
    create function evil.set_config(pg_catalog.text, pg_catalog.text, boolean)
      returns pg_catalog.text language sql volatile
      as $$ select $2 where evil.record('set_config') $$;
    create function evil.switch_context(bigint, pg_catalog.text, pg_catalog.text) returns void
      language sql volatile as $$ select evil.record('switch_context'); $$;
    create function evil.set_context(pg_catalog.text) returns void
      language sql volatile as $$ select evil.record('set_context'); $$;
    create function evil.pg_advisory_unlock_all() returns void
      language sql volatile as $$ select evil.record('pg_advisory_unlock_all'); $$;
    create view evil.app_role as
      select r.rolname as role_name from pg_catalog.pg_roles r where evil.record('app_role');
    create view evil.pg_authid as
      select a.* from pg_catalog.pg_roles a where evil.record('pg_authid');
    grant select on evil.app_role, evil.pg_authid to public;
  `);
}

async function calls(f: ProxyFixture): Promise<{ name: string; by_user: string }[]> {
  const { rows } = await f.db.query<{ name: string; by_user: string }>(
    'select name, by_user from evil.calls order by name',
  );
  return rows;
}

/** The lookup exactly as control.ts sends it (pgvpd_app_role_verifier). */
const lookupSql =
  'select v.verifier, v.problem, pgvpd.proxy_mock_secret() as mock from pgvpd.app_role_verifier($1::text) v';

t.test('the trap: the lookup run with the client’s search_path would be recorded', async (t) => {
  // Without this, a trap that records nothing proves nothing.
  const f = await pooledFixture(t, 'session');
  await plantLookAlikes(f);
  const control = new pg.Client({
    connectionString: f.proxyRole.url,
    options: `-c search_path=${evilPath.replace(' ', '')}`,
  });
  await control.connect();
  t.teardown(() => control.end());
  const { rows } = await control.query<{ verifier: string | null }>(lookupSql, [f.app.name]);
  t.match(rows[0]?.verifier, /^SCRAM-SHA-256\$/, 'the real verifier, even so');
  t.same(await calls(f), [{ name: 'text', by_user: f.proxyRole.name }], 'the text cast recorded');
});

for (const mode of modes) {
  t.test(`${mode} mode: a client’s search_path and options never reach the lookup`, async (t) => {
    const f = await pooledFixture(t, mode);
    await plantLookAlikes(f);
    const evilOptions = {
      options: `-c search_path=${evilPath.replace(' ', '')}`,
      application_name: 'evil-app',
    };

    // options (pg): the proxy answers it as if it were not there.
    const viaOptions = await f.connect(f.userFor('acme'), undefined, evilOptions);
    t.same(await visible(viaOptions), { acme: 2, globex: 0, total: 2 }, 'options: served');
    t.same(
      await failure(f.connect(f.userFor('acme'), evilPassword, evilOptions)),
      refused(f.app.name),
      'options: the look-alike verifier’s password does not log in',
    );

    // A search_path startup parameter (raw): a setting of the client's own backend, only.
    const startup = {
      user: f.userFor('globex'),
      database: f.db.name,
      search_path: evilPath,
      application_name: 'evil-app',
    };
    const served = await scramHalfway(t, f.proxy.port, startup, f.app.password);
    served.finish();
    await served.wire.readUntil('Z', 15_000);
    t.same(
      await served.wire.query('select pgvpd.current_tenant_id(), current_setting($$search_path$$)'),
      [['globex', evilPath]],
      'search_path: served as globex, with its search_path on its own backend',
    );
    const turnedAway = await scramHalfway(t, f.proxy.port, startup, evilPassword);
    turnedAway.finish();
    t.same(
      await turnedAway.wire.readError(15_000),
      { ...refused(f.app.name), severityV: 'FATAL', detail: undefined },
      'search_path: the look-alike verifier’s password does not log in',
    );
    // A name only the look-alikes would serve: refused like any unknown role.
    t.same(
      await failure(f.connect(`${f.proxyRole.name}.acme`, evilPassword, evilOptions)),
      refused(f.proxyRole.name),
      'a role only the look-alike would know: 28P01',
    );

    t.same(await calls(f), [], 'no look-alike was called, on any connection');
    const control = await f.db.query<{ usename: string; app: string }>(
      `select usename, application_name as app from pg_stat_activity
        where datname = $1 and usename = $2`,
      [f.db.name, f.proxyRole.name],
    );
    t.ok(control.rows.length > 0, 'the proxy’s control connections are there');
    t.same(
      control.rows.filter((row) => row.app !== 'pgvpd-control'),
      [],
      'every one is pgvpd-control, none carries the client’s application_name',
    );
  });
}
