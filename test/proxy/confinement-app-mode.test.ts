// Tenant confinement through the proxies (issue 11, findings 1 and 3): app mode serves only the
// application roles the database has registered, never an org's connect_as role, a superuser, a
// BYPASSRLS role or a member of one; bypass users are not served by default, and only from
// bypass_networks when configured. Every refusal is a FATAL 28000 before any context is issued.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import t, { type Test } from 'tap';
import { loadConfig, type ConfigKey } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { startProxy, type ProxyHandle } from '../../proxy/index.js';
import type { TestDatabase } from '../support/postgres.js';
import { contextPath, scratchRole } from '../support/pgvpd.js';
import { proxyFixture, visible } from './fixture.js';
import { orgFixture } from './org-fixture.js';

const contextRefused = {
  code: '28000',
  message: 'could not establish the tenant context for this session',
};

/** An app-mode proxy in front of `db`, stopped at teardown. */
async function appProxy(
  t: Test,
  db: TestDatabase,
  controlUrl: string,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
): Promise<ProxyHandle> {
  const config = loadConfig({
    flags: {
      port: 0,
      upstream_host: db.server.host,
      upstream_port: db.server.port,
      control_url: controlUrl,
      handshake_timeout: 10,
      log_level: 'silent',
      ...overrides,
    },
  });
  const proxy = await startProxy(config, { logger: createLogger(config.log_level) });
  t.teardown(() => proxy.close(1));
  return proxy;
}

/** SQLSTATE and message of a refused connection, or 'connected'. */
async function refusal(
  config: pg.ClientConfig,
): Promise<{ code?: string; message: string } | 'connected'> {
  const client = new pg.Client(config);
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.end();
    return 'connected';
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return { code, message };
  }
}

async function contextRecords(db: TestDatabase): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::int as n from pgvpd_private.session_context',
  );
  return rows[0]!.n;
}

t.test('finding 1: an org user cannot read another org through the app-mode proxy', async (t) => {
  const f = await orgFixture(t);
  const guard = (await contextPath(f.db)) === 'guard';
  const alice = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  // The attack: set a password on the shared connect_as role from inside org mode...
  let password = f.connectAsPassword;
  const changed = alice.query(`alter role current_user password 'stolen-by-alice'`);
  if (guard) {
    await t.rejects(changed, { code: '42501' }, 'the guard module refuses it outright');
  } else {
    await changed;
    password = 'stolen-by-alice';
  }
  // ...then log in to the app-mode proxy as <connect_as>.<beta's id>, with beta's org id in hand.
  const app = await appProxy(t, f.db, f.proxyRole.url);
  const records = await contextRecords(f.db);
  t.same(
    await refusal({
      host: '127.0.0.1',
      port: app.port,
      database: f.db.name,
      user: `${f.connectAs}.${f.orgs.beta}`,
      password,
    }),
    contextRefused,
    "app mode refuses an org's connect_as role",
  );
  t.equal(await contextRecords(f.db), records, 'no context was issued for it');
  // Org mode itself is unharmed for the org's own users (the proxy's passfile password is the
  // one it logs in with; restore it where the attack changed it).
  if (!guard) await f.db.query(`alter role ${f.connectAs} password '${f.connectAsPassword}'`);
  const bob = await f.connect('beta-db', 'alice', 'alice-at-beta');
  t.same((await bob.query('select count(*)::int as n from public.docs')).rows, [{ n: 3 }]);
});

t.test(
  'finding 3: no bypass by default, and a superuser as a tenant role is refused',
  async (t) => {
    const f = await proxyFixture(t);
    const superuserName = (await f.db.query<{ u: string }>('select current_user as u')).rows[0]!.u;
    const superuserPassword = new URL(f.db.url).password;
    t.same(f.config.superuser_bypass, [], 'superuser_bypass is empty by default');
    t.same(await refusal(f.through(superuserName, superuserPassword)), {
      code: '28000',
      message: `invalid pgvpd username ${JSON.stringify(superuserName)}: no tenant (missing ".")`,
    });
    const records = await contextRecords(f.db);
    t.same(await refusal(f.through(`${superuserName}.acme`, superuserPassword)), contextRefused);
    t.equal(await contextRecords(f.db), records, 'no context was issued for the superuser');
  },
);

t.test('finding 3: bypass users are served only from bypass_networks', async (t) => {
  const base = await proxyFixture(t);
  const superuserName = (await base.db.query<{ u: string }>('select current_user as u')).rows[0]!.u;
  const superuserPassword = new URL(base.db.url).password;
  const elsewhere = await proxyFixture(
    t,
    { superuser_bypass: [superuserName], bypass_networks: ['10.0.0.0/8'] },
    { db: base.db },
  );
  t.same(await refusal(elsewhere.through(superuserName, superuserPassword)), {
    code: '28000',
    message: `user ${JSON.stringify(superuserName)} may not bypass the tenant from this address`,
  });
  const here = await proxyFixture(
    t,
    { superuser_bypass: [superuserName], bypass_networks: ['127.0.0.0/8', '::1'] },
    { db: base.db },
  );
  const bypass = await here.connect(superuserName, superuserPassword);
  t.same(await visible(bypass), { acme: 2, globex: 3, total: 5 }, 'served from loopback');
});

t.test(
  'app mode refuses a superuser, a BYPASSRLS role and a member of one as the tenant role',
  async (t) => {
    const f = await proxyFixture(t);
    const bypassrls = await scratchRole(t, f.db, 'bypassrls');
    const boss = `conf_boss_${randomBytes(4).toString('hex')}`;
    await f.db.query(`create role ${boss} nologin bypassrls`);
    t.teardown(() => f.db.query(`drop role if exists ${boss}`));
    const member = await scratchRole(t, f.db, `in role ${boss}`);
    const superuser = await scratchRole(t, f.db, 'superuser');
    const adminMember = await scratchRole(t, f.db, 'in role pgvpd_admin');
    for (const r of [bypassrls, member, superuser, adminMember]) {
      // Registered, as a careless operator might: the database still refuses them.
      await f.db.query('select pgvpd.add_app_role($1)', [r.name]);
    }
    const records = await contextRecords(f.db);
    for (const [what, r] of [
      ['BYPASSRLS', bypassrls],
      ['member of a BYPASSRLS role', member],
      ['superuser', superuser],
      ['member of pgvpd_admin', adminMember],
    ] as const) {
      t.same(await refusal(f.through(`${r.name}.acme`, r.password)), contextRefused, what);
    }
    t.equal(await contextRecords(f.db), records, 'no context was issued for any of them');
    const ok = await f.connect(f.userFor('acme'));
    t.same(
      await visible(ok),
      { acme: 2, globex: 0, total: 2 },
      'a registered application role is served',
    );
  },
);
