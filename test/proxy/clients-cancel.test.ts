// Query cancellation through the app-mode proxy: the client holds a BackendKeyData the proxy made
// up, a CancelRequest carrying it reaches the right upstream backend, and no other key does.
import type pg from 'pg';
import postgres from 'postgres';
import t from 'tap';
import { backendPid, sqlstate } from '../support/pgvpd.js';
import { backendKey, sendCancelRequest, waitFor } from './clients-support.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';

/** True once the backend `pid` is inside pg_sleep. */
async function sleeping(f: ProxyFixture, pid: number): Promise<boolean> {
  const { rowCount } = await f.db.query(
    "select 1 from pg_stat_activity where pid = $1 and state = 'active' and wait_event = 'PgSleep'",
    [pid],
  );
  return rowCount === 1;
}

/** Starts `select pg_sleep(30)`; resolves with its SQLSTATE and the time it ended. */
function sleep30(client: pg.Client): Promise<{ code: string; endedAt: number }> {
  return sqlstate(client.query('select pg_sleep(30)')).then((code) => ({
    code,
    endedAt: Date.now(),
  }));
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('the client gets a cancel key of the proxy, not the upstream backend pid', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const globex = await f.connect(f.userFor('globex'));
  const key = backendKey(acme);
  t.ok(Number.isInteger(key.processId) && key.processId > 0, 'a BackendKeyData arrived');
  t.not(key.processId, await backendPid(acme), 'processID is not pg_backend_pid()');
  t.not(backendKey(globex).processId, key.processId, 'each session gets a key of its own');
  t.not(backendKey(globex).processId, await backendPid(globex));
});

t.test('a CancelRequest with the right key cancels pg_sleep(30) with 57014 in < 1 s', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const pid = await backendPid(acme);
  const key = backendKey(acme);
  const started = Date.now();
  const outcome = sleep30(acme);
  t.ok(await waitFor(() => sleeping(f, pid)), 'the query is running upstream');

  // Keys that are not the one the proxy handed out cancel nothing.
  await sendCancelRequest(f.proxy.port, key.processId, key.secretKey ^ 1);
  await sendCancelRequest(f.proxy.port, key.processId + 1, key.secretKey);
  await sendCancelRequest(f.proxy.port, pid, key.secretKey); // the real pid, the client's secret
  await pause(300);
  t.ok(await sleeping(f, pid), 'wrong keys cancelled nothing');

  const cancelAt = Date.now();
  await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
  const { code, endedAt } = await outcome;
  t.equal(code, '57014', 'canceling statement due to user request');
  t.ok(endedAt - cancelAt < 1000, `error ${String(endedAt - cancelAt)} ms after the cancel`);
  t.ok(endedAt - started < 10_000, 'long before the 30 s were up');

  // The session goes on, with its tenant context.
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
  t.equal(await backendPid(acme), pid, 'on the same backend');
});

t.test('a cancel reaches only the session whose key it carries', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const globex = await f.connect(f.userFor('globex'));
  const acmePid = await backendPid(acme);
  const globexPid = await backendPid(globex);
  const acmeOutcome = sleep30(acme);
  const globexOutcome = sleep30(globex);
  t.ok(await waitFor(async () => (await sleeping(f, acmePid)) && (await sleeping(f, globexPid))));

  await sendCancelRequest(f.proxy.port, backendKey(globex).processId, backendKey(globex).secretKey);
  t.equal((await globexOutcome).code, '57014', 'globex was cancelled');
  t.ok(await sleeping(f, acmePid), 'acme still runs');
  // A key mixing the two sessions' halves cancels neither.
  await sendCancelRequest(f.proxy.port, backendKey(acme).processId, backendKey(globex).secretKey);
  await pause(300);
  t.ok(await sleeping(f, acmePid), 'acme still runs after a mixed key');

  await sendCancelRequest(f.proxy.port, backendKey(acme).processId, backendKey(acme).secretKey);
  t.equal((await acmeOutcome).code, '57014', 'acme was cancelled');
});

t.test('postgres.js query.cancel() through the proxy ends the query with 57014', async (t) => {
  const f = await proxyFixture(t);
  const sql = postgres({
    host: '127.0.0.1',
    port: f.proxy.port,
    database: f.db.name,
    username: f.userFor('acme'),
    password: f.app.password,
    max: 1,
    onnotice: () => undefined,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  const [{ pid }] = await sql<[{ pid: number }]>`select pg_backend_pid() as pid`;
  const query = sql`select pg_sleep(30)`;
  const outcome = sqlstate(query.execute()).then((code) => ({ code, endedAt: Date.now() }));
  t.ok(await waitFor(() => sleeping(f, pid)), 'the query is running upstream');
  const cancelAt = Date.now();
  query.cancel();
  const { code, endedAt } = await outcome;
  t.equal(code, '57014');
  t.ok(endedAt - cancelAt < 1000, `error ${String(endedAt - cancelAt)} ms after the cancel`);
  const [{ tenant }] = await sql<[{ tenant: string }]>`select pgvpd.current_tenant_id() as tenant`;
  t.equal(tenant, 'acme', 'the connection goes on with its tenant');
});

t.test('a handled CancelRequest leaves no handshake timer running behind it', async (t) => {
  const f = await proxyFixture(t);
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  for (let i = 0; i < 20; i++) await sendCancelRequest(f.proxy.port, 1000 + i, i); // unknown keys
  await pause(50);
  const after = timers();
  // Each cancel connection is a session that is closed at once. Known bug: proxy/app/flow.ts
  // run() returns on the cancel path without clearTimeout(timer), so every CancelRequest leaves a
  // timer armed for handshake_timeout (10 s here) that keeps the proxy's process alive that long.
  t.ok(
    after - before < 20,
    `handshake timers outlive cancel sessions: ${String(before)} Timeout handles before, ${String(after)} after 20 cancels`,
  );
});
