// What an operator meets: a handshake that stalls, an upstream that is down, a proxy started
// without control_url, and logs that must never carry a password or a context token.
import pg from 'pg';
import t from 'tap';
import { ConfigError, loadConfig } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { startProxy } from '../../proxy/index.js';
import { testRoles } from '../support/postgres.js';
import { WireClient, authCodeOf, closedPort, startupMessage } from '../support/wire.js';
import { proxyFixture, visible } from './fixture.js';

const timeoutHint = 'Raise handshake_timeout if the upstream is slow to authenticate.';

t.test('a stalled handshake ends in FATAL 08006 naming its phase', async (t) => {
  // 3 s: short for a test, long enough for the prompt client below on a loaded machine.
  const f = await proxyFixture(t, { handshake_timeout: 3 });
  const cases: { name: string; phase: string; start: (client: WireClient) => Promise<void> }[] = [
    {
      name: 'a client that connects and sends nothing',
      phase: 'startup',
      start: () => Promise.resolve(),
    },
    {
      name: 'a client that stops after the startup packet',
      phase: 'auth',
      start: async (client) => {
        client.write(startupMessage({ user: f.userFor('acme'), database: f.db.name }));
        const request = await client.readFrame();
        t.equal(authCodeOf(request), 10, 'the proxy relayed the SASL request');
      },
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const client = await WireClient.connect(f.proxy.port);
      t.teardown(() => {
        client.destroy();
      });
      const started = Date.now();
      await c.start(client);
      t.same(await client.readError(8000), {
        severity: 'FATAL',
        severityV: 'FATAL',
        code: '08006',
        message: `handshake timed out during ${c.phase} after 3 s`,
        detail: undefined,
        hint: timeoutHint,
      });
      const elapsed = Date.now() - started;
      t.ok(elapsed >= 2900, `the timeout waited its 3 s (${String(elapsed)} ms)`);
      await client.closed();
      t.equal(client.pending, 0, 'then the proxy closed');
    });
  }
  const acme = await f.connect(f.userFor('acme'));
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'a prompt client is still served');
  t.equal(f.proxy.sessionCount(), 1, 'only that session is open');
});

t.test('an unreachable upstream is FATAL 08006 naming host and port', async (t) => {
  const port = await closedPort();
  const config = loadConfig({
    flags: {
      port: 0,
      upstream_host: '127.0.0.1',
      upstream_port: port,
      // Never used: the session fails before a context is asked for.
      control_url: 'postgres://nobody@127.0.0.1:1/none',
      log_level: 'silent',
    },
  });
  const proxy = await startProxy(config, { logger: createLogger('silent') });
  t.teardown(() => proxy.close(1));
  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'app_user.acme',
    database: 'app',
    password: 'unused',
  });
  client.on('error', () => undefined);
  await t.rejects(client.connect(), {
    severity: 'FATAL',
    code: '08006',
    message: `could not connect to upstream server 127.0.0.1:${String(port)}: ECONNREFUSED`,
  });
});

t.test('a proxy without control_url refuses to start with a ConfigError', async (t) => {
  const config = loadConfig({ flags: { port: 0, log_level: 'silent' } });
  t.equal(config.control_url, undefined, 'control_url is unset by default');
  const started = startProxy(config, { logger: createLogger('silent') });
  await t.rejects(started, {
    name: 'ConfigError',
    message: 'control_url is required: the proxy issues tenant contexts over it (role pgvpd_proxy)',
  });
  t.ok((await started.catch((error: unknown) => error)) instanceof ConfigError, 'a ConfigError');
});

t.test('debug logs name tenant and role but never a password or a token', async (t) => {
  const f = await proxyFixture(t);
  const lines: string[] = [];
  const logger = createLogger('debug', {
    write: (line: string) => {
      lines.push(line);
    },
  });
  const md5 = testRoles.md5;
  const cleartext = testRoles.password;
  const proxy = await startProxy(
    {
      ...f.config,
      log_level: 'debug',
      context_variables: ['tenant_id', 'user'],
      superuser_bypass: [md5.user, cleartext.user],
      bypass_networks: ['127.0.0.1/32'],
      // The proxy then holds cleartext passwords: the case where a careless log would leak one.
      allow_password_without_tls: true,
    },
    { logger },
  );
  t.teardown(() => proxy.close(1));
  const settings = (user: string, password: string): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: proxy.port,
    database: f.db.name,
    user,
    password,
  });
  const run = async (user: string, password: string): Promise<void> => {
    const client = new pg.Client(settings(user, password));
    client.on('error', () => undefined);
    await client.connect();
    await client.query('select pgvpd.current_tenant_id()');
    await client.end();
  };

  await run(`${f.userFor('acme')}:alice`, f.app.password);
  await run(md5.user, md5.password);
  await run(cleartext.user, cleartext.password);
  const wrongPassword = 'wrong-secret-7c1e';
  const refused = new pg.Client(settings(md5.user, wrongPassword));
  refused.on('error', () => undefined);
  await t.rejects(refused.connect(), { code: '28P01' }, 'a wrong md5 password is refused');
  const wrongTenantPassword = 'wrong-tenant-secret-3f9a';
  const refusedTenant = new pg.Client(settings(f.userFor('acme'), wrongTenantPassword));
  refusedTenant.on('error', () => undefined);
  await t.rejects(refusedTenant.connect(), { code: '28P01' }, 'a wrong SCRAM password too');

  // Let every session log its end before reading the log.
  for (let i = 0; i < 100 && proxy.sessionCount() > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.equal(proxy.sessionCount(), 0, 'every session has ended');
  const text = lines.join('');
  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);

  const secrets: { name: string; value: string }[] = [
    { name: "the tenant role's password", value: f.app.password },
    { name: 'the md5 password the proxy answered with', value: md5.password },
    { name: 'the cleartext password it relayed', value: cleartext.password },
    { name: 'a wrong md5 password', value: wrongPassword },
    { name: 'a wrong SCRAM password', value: wrongTenantPassword },
  ];
  for (const secret of secrets) {
    t.notOk(text.includes(secret.value), `the log does not contain ${secret.name}`);
  }
  t.notOk(text.includes('v1.'), 'the log does not contain a context token');
  t.notMatch(text, /md5[0-9a-f]{32}/, 'the log does not contain an MD5 password hash');
  t.match(
    records.filter((record) => record.event === 'connect'),
    [
      { level: 30, role: f.app.name, tenant: 'acme', database: f.db.name },
      { role: md5.user, tenant: null },
      { role: cleartext.user, tenant: null },
      { role: md5.user, tenant: null },
      { role: f.app.name, tenant: 'acme' },
    ],
    'each connection is logged with its role and tenant',
  );
  t.ok(
    records.some(
      (record) => record.event === 'auth' && record.result === 'refused' && record.code === '28P01',
    ),
    'the refusals are logged with their SQLSTATE',
  );
  t.ok(
    records.some(
      (record) => record.event === 'disconnect' && typeof record.duration_ms === 'number',
    ),
    'session ends are logged with their duration',
  );
});
