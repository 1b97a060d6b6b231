// The runtime record: what a running proxy shares, readable from its handle. Every live session
// is registered from accept until it closes and describes itself (mode, phase, tenant or org and
// user, role, database, client address, the backend serving it, age), in app and in org mode.
import { createConnection } from 'node:net';
import t from 'tap';
import { waitFor } from './clients-support.js';
import { proxyFixture } from './fixture.js';
import { orgFixture } from './org-fixture.js';

t.test('app mode: a piped session describes its tenant, role and own backend', async (t) => {
  const f = await proxyFixture(t);
  const client = await f.connect(f.userFor('acme'));
  const pid = Number(
    (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid,
  );
  const runtime = f.proxy.runtime;
  t.equal(runtime.config.mode, 'app');
  t.ok(runtime.app, 'app mode parts');
  t.equal(runtime.org, undefined, 'no org mode parts');
  const [session, ...others] = runtime.describeSessions();
  t.same(others, [], 'one session');
  t.match(session, {
    mode: 'app',
    phase: 'pipe',
    tenant: 'acme',
    role: f.app.name,
    database: f.db.name,
    client: /^127\.0\.0\.1:\d+$/,
    backend: { kind: 'pipe', backendPid: pid, database: f.db.name, role: f.app.name },
  });
  t.ok((session?.ageMs ?? -1) >= 0, 'its age');
  await client.end();
  t.ok(await waitFor(() => runtime.sessions.size === 0), 'it leaves the registry when it ends');
});

t.test('a connection still in its handshake is registered in phase startup', async (t) => {
  const f = await proxyFixture(t);
  const socket = createConnection({ host: '127.0.0.1', port: f.proxy.port });
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve) =>
    socket.once('connect', () => {
      resolve();
    }),
  );
  t.ok(await waitFor(() => f.proxy.runtime.sessions.size === 1), 'registered at accept');
  t.match(f.proxy.runtime.describeSessions(), [
    { mode: 'app', phase: 'startup', backend: undefined },
  ]);
});

t.test('org mode: a lent session describes its org, user, connect_as role and loan', async (t) => {
  const f = await orgFixture(t);
  const client = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  const pid = Number(
    (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid,
  );
  const runtime = f.proxy.runtime;
  t.equal(runtime.config.mode, 'org');
  t.ok(runtime.org?.pool, 'the pool');
  t.ok(runtime.org?.catalog.org('acme-analytics'), 'the catalog');
  t.match(runtime.describeSessions(), [
    {
      mode: 'org',
      phase: 'pipe',
      tenant: f.orgs.acme,
      user: 'alice',
      role: f.connectAs,
      database: 'acme-analytics',
      backend: { kind: 'loan', backendPid: pid, database: f.db.name, role: f.connectAs },
    },
  ]);
  await client.end();
  t.ok(await waitFor(() => runtime.sessions.size === 0), 'it leaves the registry when it ends');
});
