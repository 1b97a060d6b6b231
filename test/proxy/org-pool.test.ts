// The org-mode session pool seen from clients, with pool_size 1 and pool_checkout_timeout 1 s:
// acme's alice and beta's alice have the same connect_as role on the same shared database, so
// they share one pool key and its one session. Waiting and 53300, reuse of the same backend, a
// backend killed under a client, cancel through the pool, and a fresh context per checkout.
import pg from 'pg';
import t from 'tap';
import { backendPid, contextPath, sqlstate } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { backendKey, sendCancelRequest, waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { cut, failure, openClient, pause, seen } from './org-support.js';

const f = await orgFixture(t, { pool_size: 1, pool_checkout_timeout: 1 });
const logins = {
  acme: { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' },
  beta: { database: 'beta-db', user: 'alice', password: 'alice-at-beta' },
} as const;
type Org = keyof typeof logins;

function connect(t: TestLike, org: Org): Promise<pg.Client> {
  return openClient(t, { port: f.proxy.port, ...logins[org] });
}

const exhausted = {
  severity: 'FATAL',
  code: '53300',
  message: `pool for role "${f.connectAs}" on database "${f.db.name}" is exhausted (size 1); timed out after 1000 ms`,
  hint: 'Raise pool_size, or pool_checkout_timeout if sessions are short.',
};

t.test('a second client waits for the only session and gets 53300 after 1 s', async (t) => {
  const first = await connect(t, 'acme');
  const pid = await backendPid(first);
  for (const org of ['acme', 'beta'] as const) {
    const started = Date.now();
    const refused = await failure(connect(t, org));
    const waited = Date.now() - started;
    t.same(refused, exhausted, `${org}: the pool's 53300`);
    t.ok(waited >= 950 && waited < 2500, `${org}: refused after ${String(waited)} ms`);
  }
  t.same(await seen(first), { tenant: f.orgs.acme, rows: ['a1', 'a2'] }, 'the first goes on');
  await first.end();
  const next = await connect(t, 'beta');
  t.equal(await backendPid(next), pid, 'once the first left, the next client gets its session');
  t.same(await seen(next), { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] });
  await next.end();
});

t.test('a waiting client gets the session as soon as the holder leaves', async (t) => {
  const first = await connect(t, 'acme');
  const pid = await backendPid(first);
  const started = Date.now();
  const waiting = connect(t, 'acme');
  await pause(300);
  await first.end();
  const second = await waiting;
  const waited = Date.now() - started;
  t.ok(waited >= 300 && waited < 1000, `served after ${String(waited)} ms, before the timeout`);
  t.equal(await backendPid(second), pid, 'the same backend');
  t.same(await seen(second), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
  await second.end();
});

t.test(
  'a backend killed under a client: the client is told, the next one gets a new backend',
  async (t) => {
    const victim = await connect(t, 'acme');
    const pid = await backendPid(victim);
    const errors: (string | undefined)[] = [];
    victim.on('error', (error: Error & { code?: string }) => errors.push(error.code));
    const ended = new Promise<void>((resolve) => victim.once('end', resolve));
    const killed = await f.db.query<{ ok: boolean }>('select pg_terminate_backend($1) as ok', [
      pid,
    ]);
    t.same(killed.rows, [{ ok: true }]);
    t.ok(
      await Promise.race([ended.then(() => true), pause(5000).then(() => false)]),
      'the client’s connection was closed',
    );
    // pg reports PostgreSQL's FATAL, then (without a code) the connection's end.
    t.equal(errors[0], '57P01', 'PostgreSQL’s FATAL reached the client through the loan');
    t.not(await sqlstate(victim.query('select 1')), 'no error', 'the dead connection is unusable');

    const next = await connect(t, 'beta');
    const nextPid = await backendPid(next);
    t.not(nextPid, pid, 'a different backend');
    t.same(await seen(next), { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] }, 'and it works');
    await next.end();
  },
);

/** True once the backend `pid` is inside pg_sleep. */
async function sleeping(pid: number): Promise<boolean> {
  const { rowCount } = await f.db.query(
    "select 1 from pg_stat_activity where pid = $1 and state = 'active' and wait_event = 'PgSleep'",
    [pid],
  );
  return rowCount === 1;
}

t.test('cancel through the pool: the client’s key stops pg_sleep(30) with 57014', async (t) => {
  const acme = await connect(t, 'acme');
  const pid = await backendPid(acme);
  const key = backendKey(acme);
  t.ok(Number.isInteger(key.processId) && key.processId > 0, 'a BackendKeyData arrived');
  t.not(key.processId, pid, 'the client’s processID is not the real backend pid');

  const outcome = sqlstate(acme.query('select pg_sleep(30)')).then((code) => ({
    code,
    endedAt: Date.now(),
  }));
  t.ok(await waitFor(() => sleeping(pid)), 'the query is running upstream');
  // Keys the proxy did not hand out cancel nothing; the real pid is no key either.
  await sendCancelRequest(f.proxy.port, key.processId, key.secretKey ^ 1);
  await sendCancelRequest(f.proxy.port, pid, key.secretKey);
  await pause(300);
  t.ok(await sleeping(pid), 'wrong keys cancelled nothing');

  const cancelAt = Date.now();
  await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
  const { code, endedAt } = await outcome;
  t.equal(code, '57014', 'canceling statement due to user request');
  t.ok(endedAt - cancelAt < 1000, `error ${String(endedAt - cancelAt)} ms after the cancel`);
  t.equal(await backendPid(acme), pid, 'the session goes on, on the same backend');
  t.same(await seen(acme), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
  await acme.end();

  // After the client left, its key is void: the next client of the same backend has another.
  const next = await connect(t, 'acme');
  t.equal(await backendPid(next), pid);
  t.not(backendKey(next).processId, key.processId, 'a new key for the new client');
  await next.end();
});

t.test(
  'the owner’s context kept for its next client, and one session lent to two orgs in turn',
  async (t) => {
    const context = async (client: pg.Client) =>
      (
        await client.query<{ pid: number; token: string; user: string }>(
          "select pg_backend_pid() as pid, current_setting('pgvpd.context') as token, pgvpd.context('user') as user",
        )
      ).rows[0]!;

    const first = await connect(t, 'acme');
    const a = await context(first);
    t.same(await seen(first), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
    await first.end();

    const second = await connect(t, 'acme');
    const b = await context(second);
    t.equal(b.pid, a.pid, 'the same pooled session');
    // The release reset the session and put the same owner's context back (set_context of the
    // token its switch left): no new grant for the same org and user, as in transaction mode.
    t.equal(b.token, a.token, 'with the same owner’s context, put back after the reset');
    t.same(await seen(second), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
    await second.end();

    // The session that served acme's alice is now lent to beta's alice.
    const beta = await connect(t, 'beta');
    const c = await context(beta);
    t.equal(c.pid, a.pid, 'still the same session, now for beta');
    t.not(c.token, a.token, 'a new context for another owner');
    t.equal(c.user, 'alice');
    t.same(await seen(beta), { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] }, 'beta’s view only');
    // acme's earlier tokens were issued for this very backend; they are no longer on record.
    t.equal(await sqlstate(beta.query('select pgvpd.set_context($1)', [a.token])), '28000');
    const path = await contextPath(f.db);
    const replay = (): Promise<unknown> =>
      beta.query("select set_config('pgvpd.context', $1, false)", [b.token]);
    if (path === 'guard') {
      t.equal(await sqlstate(replay()), '42501', 'guard path: pgvpd.context is not the client’s');
      t.same(
        await seen(beta),
        { tenant: f.orgs.beta, rows: ['b1', 'b2', 'b3'] },
        'beta’s view still',
      );
    } else {
      await replay();
      t.same(await seen(beta), { tenant: null, rows: [] }, 'a replayed acme token shows nothing');
    }
    await beta.end();

    // And back to acme, on the same backend, with acme's view again.
    const again = await connect(t, 'acme');
    t.equal((await context(again)).pid, a.pid);
    t.same(await seen(again), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
    await again.end();
  },
);

t.test('a client that gives up while waiting does not take the session with it', async (t) => {
  const holder = await connect(t, 'acme');
  const pid = await backendPid(holder);
  const quitter = new pg.Client({ host: '127.0.0.1', port: f.proxy.port, ...logins.beta });
  quitter.on('error', () => undefined);
  const quitting = quitter.connect().catch(() => undefined);
  await pause(300);
  cut(quitter);
  await quitting;
  await holder.end();
  const started = Date.now();
  const next = await connect(t, 'acme');
  t.ok(Date.now() - started < 900, `served in ${String(Date.now() - started)} ms`);
  t.equal(await backendPid(next), pid, 'the same session, not lost to the quitter');
  t.same(await seen(next), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
  await next.end();
});

t.test(
  'a client that leaves mid-query leaves no statement running and frees its slot',
  async (t) => {
    // The proxy cancels the statement of a client that left (it holds the backend's key), so the
    // reset ends at once and the session serves the next client. (Before c2490ad the reset waited
    // out its 5 s while waiting clients got 53300, and the session was then dropped with its
    // statement still running upstream, so pool_size no longer bounded the role's backends.)
    const leaver = await connect(t, 'acme');
    const pid = await backendPid(leaver);
    void leaver.query('select pg_sleep(30)').catch(() => undefined);
    t.ok(await waitFor(() => sleeping(pid)), 'the query is running upstream');
    cut(leaver);
    const next = await connect(t, 'acme').catch((error: unknown) => error as Error);
    t.notOk(
      next instanceof Error,
      next instanceof Error ? next.message : 'the next client is served',
    );
    t.ok(
      await waitFor(async () => !(await sleeping(pid)), 2000),
      'the abandoned pg_sleep(30) no longer runs',
    );
    if (!(next instanceof Error)) {
      t.same(await seen(next), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
      await next.end();
    }
  },
);
