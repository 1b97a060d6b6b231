// Org mode readies a pooled session while the client derives its SCRAM key (org-session.ts):
// only an idle session, only for a known user from an address without a recent failure, and a
// failed authentication hands the session back to be reset, not thrown away. pool_size 1, so
// that "the same backend" and "no new backend" are plain to see.
import t from 'tap';
import { backendPid } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { terminateMessage, WireClient } from '../support/wire.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { failure, openClient, pause, scramHalfway, seen } from './org-support.js';

const f = await orgFixture(t, { pool_size: 1, pool_checkout_timeout: 1, pool_ready_early: true });
const acme = {
  port: f.proxy.port,
  database: 'acme-analytics',
  user: 'alice',
  password: 'alice-at-acme',
};
const refused = {
  severity: 'FATAL',
  code: '28P01',
  message: 'password authentication failed for user "alice"',
  hint: undefined,
};

/** The context record of a backend: who it was issued for and when. */
async function record(
  pid: number,
): Promise<{ tenant: string; username: string; issued: string } | undefined> {
  const { rows } = await f.db.query<{ tenant: string; username: string; issued: string }>(
    `select tenant, username, issued_at::text as issued from pgvpd_private.session_context where pid = $1`,
    [pid],
  );
  return rows[0];
}

/** The backends of the connect_as role, and what the one asked for ran last. */
async function backends(
  pid: number,
): Promise<{ count: number; query: string | null; state: string | null }> {
  const { rows } = await f.db.query<{ count: number; query: string | null; state: string | null }>(
    `select count(*)::int as count,
            max(query) filter (where pid = $2) as query, max(state) filter (where pid = $2) as state
       from pg_stat_activity where usename = $1`,
    [f.connectAs, pid],
  );
  return rows[0]!;
}

const resetDone = (pid: number) => async (): Promise<boolean> => {
  const b = await backends(pid);
  return b.query === 'DISCARD ALL' && b.state === 'idle';
};

/** A raw client of alice at acme that stops after the server-first-message. */
function halfway(t: TestLike, password: string): Promise<{ wire: WireClient; finish(): void }> {
  return scramHalfway(t, f.proxy.port, { user: 'alice', database: 'acme-analytics' }, password);
}

async function onePooledBackend(): Promise<number> {
  const client = await openClient(t, acme);
  const pid = await backendPid(client);
  await client.end();
  if (!(await waitFor(resetDone(pid)))) throw new Error('the pooled session was not reset');
  return pid;
}

t.test(
  'a wrong password: the session readied meanwhile goes back reset, and is reused',
  async (t) => {
    const pid = await onePooledBackend();
    const before = await record(pid);
    const attempt = await halfway(t, 'not-her-password');
    t.ok(
      await waitFor(async () => (await record(pid))?.issued !== before?.issued),
      'a context was issued for the idle backend while the client derived its key',
    );
    const early = await record(pid);
    t.same(
      { tenant: early?.tenant, username: early?.username },
      { tenant: f.orgs.acme, username: 'alice' },
      'issued for the org and user that are logging in',
    );
    attempt.finish();
    const error = await attempt.wire.readError();
    t.same(
      { severity: error.severity, code: error.code, message: error.message },
      { severity: refused.severity, code: refused.code, message: refused.message },
      'the client gets 28P01',
    );
    t.ok(await waitFor(resetDone(pid)), 'the backend ran DISCARD ALL and is idle again');

    const client = await openClient(t, acme);
    t.equal(await backendPid(client), pid, 'the next client gets the same backend');
    t.same((await seen(client)).tenant, f.orgs.acme, 'with its own context');
    t.equal((await backends(pid)).count, 1, 'no other backend was opened');
  },
);

t.test(
  'after a failure from its address, nothing is readied before the password is checked',
  async (t) => {
    const pid = await onePooledBackend();
    t.same(await failure(openClient(t, { ...acme, password: 'wrong' })), refused, 'one failure');
    t.ok(await waitFor(resetDone(pid)), 'and its early session reset');
    const before = await record(pid);
    const attempt = await halfway(t, acme.password);
    await pause(300);
    t.same(await record(pid), before, 'no context issued while the client derives its key');
    attempt.finish();
    const frames = await attempt.wire.readUntil('Z');
    t.ok(
      frames.some((frame) => frame.code === 'K'),
      'the right password still logs in',
    );
    const rows = await attempt.wire.query('select pgvpd.current_tenant_id()');
    t.same(rows, [[f.orgs.acme]], 'with the context issued after authentication');
    attempt.wire.end(terminateMessage());
    await attempt.wire.closed();
  },
);

t.test('an unauthenticated client never waits for the pool', async (t) => {
  const holder = await openClient(t, acme);
  const pid = await backendPid(holder);
  const started = Date.now();
  t.same(await failure(openClient(t, { ...acme, password: 'wrong' })), refused, 'wrong password');
  const waited = Date.now() - started;
  t.ok(waited < 900, `refused in ${String(waited)} ms, not after the 1 s checkout timeout`);
  t.same((await seen(holder)).tenant, f.orgs.acme, 'the holder keeps its session and context');
  t.equal(await backendPid(holder), pid);
  t.same(
    await failure(openClient(t, acme)),
    {
      severity: 'FATAL',
      code: '53300',
      message: `pool for role "${f.connectAs}" on database "${f.db.name}" is exhausted (size 1); timed out after 1000 ms`,
      hint: 'Raise pool_size, or pool_checkout_timeout if sessions are short.',
    },
    'while the right password waits for the pool as before',
  );
});
