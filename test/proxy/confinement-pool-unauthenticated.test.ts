// Issue 11, finding 5: the pool held by unauthenticated clients. Org mode readies an idle pooled
// session while a client derives its SCRAM key (org-session.ts). Until the client has
// authenticated, that checkout is tentative: a checkout that would otherwise wait takes it back
// (the pool logs `pool_reclaim`), and only the context (org, username) is set on it; the
// client's startup parameters are applied after authentication. pool_size 2 and a checkout
// timeout of 5 s: an authenticated client that waited for a stalled one would get 53300 then.
// Refused logins come last: after one, the address gets no early readying for a while.
// A pooled backend keeps its last owner's context while idle, and readying it for that owner
// sends nothing; so each test first lends the backends to alice of beta-db (both orgs share one
// connect_as role, hence one pool key), and an early readying for alice of acme-analytics is a
// switch to see: the backend's context record turns to acme while its client is still stalled.
import t from 'tap';
import { createLogger } from '../../proxy/logger.js';
import { backendPid } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { terminateMessage, WireClient, type Frame } from '../support/wire.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { openClient, resetDone, scramHalfway } from './org-support.js';

const size = 2;
const reclaims: number[] = [];
const logger = createLogger('debug', {
  write: (line: string) => {
    const entry = JSON.parse(line) as { event?: string; pid?: number };
    if (entry.event === 'pool_reclaim' && entry.pid !== undefined) reclaims.push(entry.pid);
  },
});
const f = await orgFixture(
  t,
  { pool_size: size, pool_checkout_timeout: 5, pool_ready_early: true },
  { logger },
);
const acme = { port: f.proxy.port, database: 'acme-analytics', user: 'alice' };
const password = 'alice-at-acme';
const beta = { ...acme, database: 'beta-db', password: 'alice-at-beta' };
const refused = {
  severity: 'FATAL',
  severityV: 'FATAL',
  code: '28P01',
  message: 'password authentication failed for user "alice"',
  detail: undefined,
  hint: undefined,
};

/**
 * The pool's backends, all idle after a reset and holding the context of alice at beta-db: `n`
 * clients of hers at once, then gone.
 */
async function pooledBackends(n: number): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => openClient(t, beta)));
  const pids = await Promise.all(clients.map(backendPid));
  await Promise.all(clients.map((client) => client.end()));
  for (const pid of pids) if (!(await resetDone(f.db, pid))) throw new Error(`${pid} not reset`);
  return pids.sort((a, b) => a - b);
}

interface Backend {
  pid: number;
  app: string;
  query: string;
  state: string;
}

/** The connect_as role's backends, as a superuser sees them. */
async function backends(): Promise<Backend[]> {
  const { rows } = await f.db.query<Backend>(
    `select pid, application_name as app, query, state from pg_stat_activity
      where usename = $1 order by pid`,
    [f.connectAs],
  );
  return rows;
}

/**
 * Idle backends of the connect_as role whose context is alice's at acme-analytics: after
 * pooledBackends(), those an early readying switched for a stalled client of hers.
 */
async function readied(): Promise<number[]> {
  const { rows } = await f.db.query<{ pid: number }>(
    `select a.pid from pg_stat_activity a
       join pgvpd_private.session_context c on c.pid = a.pid
      where a.usename = $1 and a.state = 'idle' and c.tenant = $2 and c.username = 'alice'
      order by a.pid`,
    [f.connectAs, f.orgs.acme],
  );
  return rows.map((row) => row.pid);
}

/** A raw client that stops after its SCRAM client-first-message, as one deriving its key. */
function stalled(
  t: TestLike,
  parameters: Record<string, string> = {},
  secret = password,
): Promise<{ wire: WireClient; finish(): void }> {
  return scramHalfway(
    t,
    f.proxy.port,
    { user: acme.user, database: acme.database, ...parameters },
    secret,
  );
}

/** The ParameterStatus messages among `frames`, as name → value. */
function statuses(frames: Frame[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const frame of frames.filter((frame) => frame.code === 'S')) {
    const [name, value] = frame.body.toString('utf8').split('\0');
    out[name!] = value!;
  }
  return out;
}

/** Sends the client's proof; its frames up to ReadyForQuery (throws on an ErrorResponse). */
async function logsIn(client: { wire: WireClient; finish(): void }): Promise<Frame[]> {
  client.finish();
  return client.wire.readUntil('Z');
}

t.test(
  "finding 5: pool_size clients stalled after their first SCRAM message do not delay an authenticated client's checkout",
  async (t) => {
    const pids = await pooledBackends(size);
    t.same(await readied(), [], 'no backend holds a context of acme before');
    const holders = [];
    for (let i = 0; i < size; i++) holders.push(await stalled(t));
    t.ok(
      await waitFor(async () => (await readied()).length === size),
      'each stalled client had an idle session readied for it',
    );
    t.same(await readied(), pids, 'every pooled backend');

    const started = Date.now();
    const outcome = await openClient(t, { ...acme, password }, { application_name: 'good' }).then(
      (client) => ({ client, error: undefined }),
      (error: unknown) => ({ client: undefined, error: error as Error }),
    );
    const waited = Date.now() - started;
    t.equal(outcome.error?.message, undefined, 'the authenticated client is served, no 53300');
    const client = outcome.client;
    if (!client) return;
    t.ok(waited < 4000, `served in ${String(waited)} ms, not after the 5 s checkout timeout`);
    const pid = await backendPid(client);
    t.ok(pids.includes(pid), 'on one of the pooled backends');
    t.same(reclaims, [pid], 'taken back from a stalled client (pool_reclaim in the log)');
    const { rows } = await client.query<{ one: number; app: string; tenant: string }>(
      `select 1 as one, current_setting('application_name') as app,
              pgvpd.current_tenant_id() as tenant`,
    );
    t.same(rows, [{ one: 1, app: 'good', tenant: f.orgs.acme }], 'select 1, its own settings');
    t.equal((await backends()).length, size, 'no backend beyond pool_size was opened');

    // The stalled clients authenticate after all: the one whose session was taken back checks
    // out as any authenticated client does, and gets the session the first client leaves.
    await client.end();
    for (const holder of holders) {
      t.ok(
        (await logsIn(holder)).some((frame) => frame.code === 'K'),
        'it logs in',
      );
      t.same(
        await holder.wire.query('select pgvpd.current_tenant_id()'),
        [[f.orgs.acme]],
        'with its context',
      );
    }
    for (const holder of holders) {
      holder.wire.end(terminateMessage());
      await holder.wire.closed();
    }
    for (const pid of pids) t.ok(await resetDone(f.db, pid), `backend ${String(pid)} is idle`);
    t.same(
      (await backends()).map((b) => b.pid),
      pids,
      'the same backends throughout',
    );
  },
);

t.test(
  "finding 5: an authenticated client's parameters reach the session readied for it early, with their ParameterStatus",
  async (t) => {
    const pids = await pooledBackends(size);
    t.same(await readied(), [], 'no backend holds a context of acme before');
    const client = await stalled(t, { application_name: 'early-bird', TimeZone: 'Asia/Tokyo' });
    t.ok(
      await waitFor(async () => (await readied()).length === 1),
      'a session is readied while the client derives its key',
    );
    const [early] = await readied();
    t.ok(early !== undefined && pids.includes(early), 'a pooled backend');
    t.not((await backends()).find((b) => b.pid === early)?.app, 'early-bird', 'not yet its name');

    const frames = await logsIn(client);
    t.match(
      statuses(frames),
      { application_name: 'early-bird', TimeZone: 'Asia/Tokyo' },
      'ParameterStatus of the client’s parameters in the handshake',
    );
    t.same(
      await client.wire.query(
        `select pg_backend_pid()::text, current_setting('application_name'),
                current_setting('TimeZone'), pgvpd.current_tenant_id()`,
      ),
      [[String(early), 'early-bird', 'Asia/Tokyo', f.orgs.acme]],
      'the readied backend, with the client’s parameters and its context',
    );
    client.wire.end(terminateMessage());
    await client.wire.closed();
  },
);

t.test(
  "finding 5: an unauthenticated client's startup parameters never reach a pooled backend",
  async (t) => {
    const pids = await pooledBackends(size);
    t.same(await readied(), [], 'no backend holds a context of acme before');
    // Each takes one of the two sessions; neither will authenticate.
    const attempts = [
      await stalled(t, { application_name: 'evil', DateStyle: 'SQL, DMY' }, 'not-her-password'),
      await stalled(t, { idle_session_timeout: '1' }, 'not-her-password'),
    ];
    t.ok(
      await waitFor(async () => {
        // Every pooled backend has run what was readied on it, or has died of it.
        const now = await backends();
        return (await readied()).length + (size - now.length) === size;
      }),
      'a session was readied for each client',
    );
    const during = await backends();
    t.same(
      during.map((b) => b.pid),
      pids,
      'every pooled backend is alive (idle_session_timeout=1 was not applied)',
    );
    t.same(
      during.filter((b) => b.app === 'evil' || b.query.includes('set_config')),
      [],
      'no backend has the client’s application_name or ran its set_config',
    );

    // An authenticated client comes while both are stalled: it takes one of their sessions.
    const before = reclaims.length;
    const next = await openClient(t, { ...acme, password }, { application_name: 'next' });
    const pid = await backendPid(next);
    t.ok(pids.includes(pid), 'the authenticated client gets a pooled backend');
    t.same(reclaims.slice(before), [pid], 'taken back from a stalled client');
    const { rows } = await next.query<{ app: string; style: string }>(
      `select current_setting('application_name') as app, current_setting('DateStyle') as style`,
    );
    const server = await f.db.query<{ style: string }>(
      `select current_setting('DateStyle') as style`,
    );
    t.same(rows, [{ app: 'next', style: server.rows[0]!.style }], 'with its own settings only');

    // Neither stalled client had the password: both refused alike, the taken-back one too.
    for (const attempt of attempts) {
      attempt.finish();
      t.same(await attempt.wire.readError(), refused, 'refused with 28P01');
    }
    await next.end();
    for (const pid of pids) t.ok(await resetDone(f.db, pid), `backend ${String(pid)} is reset`);
    t.same(
      (await backends()).map((b) => b.pid),
      pids,
      'no pooled backend was lost',
    );
  },
);
