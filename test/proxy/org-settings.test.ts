// Org-mode settings seen through a running proxy: pool_idle_timeout and pool_max_lifetime reach
// the pool (test/proxy/pool-session.test.ts covers the pool itself), and a catalog change reaches
// every running proxy within a second, not just one.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { startProxy } from '../../proxy/index.js';
import { backendPid } from '../support/pgvpd.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { failure, openClient, resetDone } from './org-support.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const acme = { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' } as const;

t.test('pool_idle_timeout: an idle pooled session is closed after it', async (t) => {
  const f = await orgFixture(t, { pool_idle_timeout: 1 });
  const alive = async (pid: number) =>
    (await f.db.query('select 1 from pg_stat_activity where pid = $1', [pid])).rowCount === 1;
  const client = await f.connect(acme.database, acme.user, acme.password);
  const pid = await backendPid(client);
  await client.end();
  t.ok(await alive(pid), 'still pooled when the client has left');
  t.ok(await waitFor(async () => !(await alive(pid)), 5000), 'closed once idle for a second');
});

t.test('pool_max_lifetime: a session older than it is not reused', async (t) => {
  const f = await orgFixture(t, { pool_max_lifetime: 5 });
  const pidOf = async () => {
    const client = await f.connect(acme.database, acme.user, acme.password);
    const pid = await backendPid(client);
    await client.end();
    await resetDone(f.db, pid);
    return pid;
  };
  const first = await pidOf();
  t.equal(await pidOf(), first, 'a young session is reused');
  await sleep(5500);
  t.not(await pidOf(), first, 'after five seconds a new session serves the client');
});

t.test('a removed user is refused by every running proxy within a second', async (t) => {
  const f = await orgFixture(t);
  const passfile = join(mkdtempSync(join(tmpdir(), 'pgvpd-settings-')), 'passfile');
  writeFileSync(passfile, `*:*:*:${f.connectAs}:${f.connectAsPassword}\n`, { mode: 0o600 });
  const config = loadConfig({
    flags: {
      mode: 'org',
      port: 0,
      upstream_host: f.db.server.host,
      upstream_port: f.db.server.port,
      control_url: f.proxyRole.url,
      connect_as_passfile: passfile,
      log_level: 'silent',
    },
  });
  const other = await startProxy(config, { logger: createLogger(config.log_level) });
  t.teardown(() => other.close(1));

  await f.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    f.orgs.acme,
    'dave',
    makeVerifier('dave-pass'),
    f.connectAs,
  ]);
  const dave = { database: 'acme-analytics', user: 'dave', password: 'dave-pass' };
  const ports = [f.proxy.port, other.port];
  t.ok(
    await waitFor(async () => {
      for (const port of ports) {
        const client = await openClient(t, { port, ...dave }).catch(() => undefined);
        if (!client) return false;
        await client.end();
      }
      return true;
    }, 3000),
    'both proxies let dave in',
  );

  await f.db.query(`select pgvpd.user_remove($1, 'dave')`, [f.orgs.acme]);
  await sleep(1000);
  for (const port of ports) {
    t.same(
      await failure(openClient(t, { port, ...dave })),
      {
        severity: 'FATAL',
        code: '28P01',
        message: 'password authentication failed for user "dave"',
        hint: undefined,
      },
      `refused by the proxy on port ${String(port)}`,
    );
  }
});
