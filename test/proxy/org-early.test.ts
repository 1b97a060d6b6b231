// Org mode readies a pooled session while the client derives its SCRAM key (pool/checkout.ts):
// only an idle session, only for a known user from an address without a recent failure, and a
// failed authentication hands the session back to be reset, not thrown away. pool_size 1, so
// that "the same backend" and "no new backend" are plain to see. A pooled backend keeps its last
// owner's context while idle, and readying it for that owner sends nothing: so the backend is
// first used by alice of beta-db (both orgs share one connect_as role, hence one pool key), and
// readying it for alice of acme-analytics is a switch to see in its context record (tenant,
// user, and the grant's sequence number, which every switch on a backend raises). A release
// resets the backend (ROLLBACK, DISCARD ALL) and only then switches its last owner's context
// back in: a record newer than the last readying, on an idle backend, is that reset done.
import t from 'tap';
import { backendPid } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { terminateMessage, WireClient } from '../support/wire.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { failure, openClient, pause, scramHalfway, seen, type OrgLogin } from './org-support.js';

const f = await orgFixture(t, { pool_size: 1, pool_checkout_timeout: 1, pool_ready_early: true });
const acme = {
  port: f.proxy.port,
  database: 'acme-analytics',
  user: 'alice',
  password: 'alice-at-acme',
};
const beta = { ...acme, database: 'beta-db', password: 'alice-at-beta' };
const refused = {
  severity: 'FATAL',
  code: '28P01',
  message: 'password authentication failed for user "alice"',
  hint: undefined,
};

interface ContextRecord {
  tenant: string;
  username: string;
  seq: number | null;
  issued: string;
}

/** The context record of a backend: who it holds a context for, the grant's sequence, when. */
async function record(pid: number): Promise<ContextRecord | undefined> {
  const { rows } = await f.db.query<ContextRecord>(
    `select tenant, username, seq::int as seq, issued_at::text as issued
       from pgvpd_private.session_context where pid = $1`,
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

/**
 * Until the backend is idle after a release's restore step: its last statement put a context
 * back (set_context of the context it held, or a switch) and its record is the one of `after`
 * or a newer one. The client's own last statement is never one of those.
 */
const switchedSince = (pid: number, after: ContextRecord | undefined) => async () => {
  const [now, b] = await Promise.all([record(pid), backends(pid)]);
  return (
    now !== undefined &&
    now.seq !== null &&
    now.seq >= (after?.seq ?? 0) &&
    b.state === 'idle' &&
    /pgvpd\.(switch|set)_context\(/.test(b.query ?? '')
  );
};

/** A raw client of alice at acme that stops after the server-first-message. */
function halfway(t: TestLike, password: string): Promise<{ wire: WireClient; finish(): void }> {
  return scramHalfway(t, f.proxy.port, { user: 'alice', database: 'acme-analytics' }, password);
}

/** The pool's one backend, idle and holding the context of `login`'s user (beta's by default). */
async function onePooledBackend(login: OrgLogin = beta): Promise<number> {
  const client = await openClient(t, login);
  const pid = await backendPid(client);
  const used = await record(pid);
  await client.end();
  if (!(await waitFor(switchedSince(pid, used))))
    throw new Error('the pooled session was not reset');
  return pid;
}

t.test(
  'a wrong password: the session readied meanwhile goes back reset, and is reused',
  async (t) => {
    const pid = await onePooledBackend();
    const before = await record(pid);
    t.same(
      { tenant: before?.tenant, username: before?.username },
      { tenant: f.orgs.beta, username: 'alice' },
      'the idle backend holds the context of alice at beta-db',
    );
    const attempt = await halfway(t, 'not-her-password');
    t.ok(
      await waitFor(async () => (await record(pid))?.tenant === f.orgs.acme),
      'a context was switched in on the idle backend while the client derived its key',
    );
    const early = await record(pid);
    t.same(
      { tenant: early?.tenant, username: early?.username },
      { tenant: f.orgs.acme, username: 'alice' },
      'for the org and user that are logging in',
    );
    t.ok((early?.seq ?? 0) > (before?.seq ?? 0), 'by a switch grant newer than the last one');
    attempt.finish();
    const error = await attempt.wire.readError();
    t.same(
      { severity: error.severity, code: error.code, message: error.message },
      { severity: refused.severity, code: refused.code, message: refused.message },
      'the client gets 28P01',
    );
    t.ok(
      await waitFor(switchedSince(pid, early)),
      'the backend was reset, its last context switched back in, and it is idle again',
    );
    t.equal((await backends(pid)).count, 1, 'it was not thrown away');

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
    const used = await record(pid);
    t.same(await failure(openClient(t, { ...beta, password: 'wrong' })), refused, 'one failure');
    t.ok(await waitFor(switchedSince(pid, used)), 'and its early session reset');
    const before = await record(pid);
    t.same(
      { tenant: before?.tenant, username: before?.username },
      { tenant: f.orgs.beta, username: 'alice' },
      'the idle backend holds the context of alice at beta-db: readying it for acme would show',
    );
    const attempt = await halfway(t, acme.password);
    await pause(300);
    t.same(await record(pid), before, 'no context switched in while the client derives its key');
    attempt.finish();
    const frames = await attempt.wire.readUntil('Z');
    t.ok(
      frames.some((frame) => frame.code === 'K'),
      'the right password still logs in',
    );
    const rows = await attempt.wire.query('select pgvpd.current_tenant_id()');
    t.same(rows, [[f.orgs.acme]], 'with the context switched in after authentication');
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
