// Usernames an attacker or a typo would send, through the running proxy with real pg clients:
// each is refused with 28000 and the proxy's own message before anything goes upstream, and the
// proxy goes on serving good clients. The upstream is reached through a counting relay, so
// "nothing went upstream" is a count of TCP connections, not an inference from logs.
import pg from 'pg';
import t from 'tap';
import { serverInfo } from '../support/postgres.js';
import { countingRelay } from '../support/wire.js';
import { proxyFixture, visible } from './fixture.js';

const tenantPattern = '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$';
const valuePattern = '^[A-Za-z0-9@._+-]{1,255}$';
const hint = `Connect as <role>.<tenant>[:<user>], e.g. "app_user.acme"; a tenant matches ${tenantPattern}.`;

t.test('bad usernames are refused with 28000 before anything reaches upstream', async (t) => {
  const server = await serverInfo();
  const relay = await countingRelay({ host: server.host, port: server.port });
  t.teardown(() => relay.close());
  const f = await proxyFixture(t, {
    upstream_host: '127.0.0.1',
    upstream_port: relay.port,
    context_variables: ['tenant_id', 'user'],
  });
  const app = f.app.name;
  const cases: { name: string; user: string; problem: string }[] = [
    {
      name: 'a double quote in the role',
      user: `${app}".acme`,
      problem: 'role does not match ^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    },
    {
      name: 'unicode in the role',
      user: `${app}é.acme`,
      problem: 'role does not match ^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    },
    {
      name: 'a single quote in the tenant',
      user: `${app}.ac'me`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a double quote closing the tenant',
      user: `${app}.acme"`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a semicolon and a statement after the tenant',
      user: `${app}.acme';drop table notes;--`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a space in the tenant',
      user: `${app}.acme globex`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a non-ASCII tenant',
      user: `${app}.acmé`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a right-to-left override in the tenant',
      user: `${app}.acme\u202e`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    {
      name: 'a username of 1,000 characters',
      user: `${app}.${'a'.repeat(1000 - app.length - 1)}`,
      problem: `tenant does not match ${tenantPattern}`,
    },
    { name: 'an empty tenant', user: `${app}.`, problem: 'empty tenant' },
    { name: 'no tenant separator', user: app, problem: 'no tenant (missing ".")' },
    { name: 'an empty role', user: '.acme', problem: 'empty role' },
    {
      name: 'a quote in the user value',
      user: `${app}.acme:o'brien`,
      problem: `value for user does not match ${valuePattern}`,
    },
    {
      name: 'more values than configured',
      user: `${app}.acme:alice:admin`,
      problem: '2 context values given, 1 configured',
    },
  ];
  t.equal(
    cases.find((c) => c.name === 'a username of 1,000 characters')?.user.length,
    1000,
    'the long username is 1,000 characters',
  );

  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const client = new pg.Client(f.through(c.user));
      client.on('error', () => undefined);
      await t.rejects(client.connect(), {
        severity: 'FATAL',
        code: '28000',
        message: `invalid pgvpd username ${JSON.stringify(c.user)}: ${c.problem}`,
        hint,
      });
      t.equal(relay.connections(), 0, 'no connection reached the upstream');
    });
  }

  const acme = await f.connect(f.userFor('acme'));
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'a good client is served after');
  t.equal(relay.connections(), 1, 'the good client is the first to reach the upstream');
  const alice = await f.connect(`${f.userFor('globex')}:alice`);
  const { rows } = await alice.query<{ tenant: string; who: string | null }>(
    "select pgvpd.current_tenant_id() as tenant, pgvpd.context('user') as who",
  );
  t.same(rows, [{ tenant: 'globex', who: 'alice' }], 'a client with a user value is served too');
});
