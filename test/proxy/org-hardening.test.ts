// Org mode at its edges, through the proxy: repeated failed logins are slowed down and a success
// forgives; startup parameters reach the pooled session and leave with the client, while pgvpd.*
// ones never reach it; unknown user and wrong password are the same error in every field; a
// failing required resolver refuses the connection and a working one's values reach the session;
// catalog changes made while the catalog connection is down are seen after it reconnects.
// One fixture, and the throttle test first: the throttle remembers failures for the proxy's life.
import pg from 'pg';
import postgres from 'postgres';
import t from 'tap';
import { createLogger } from '../../proxy/logger.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { resetDone } from './org-support.js';

// The proxy's log says how long it held back each refusal (delay_ms): the throttle's decisions,
// exactly, whatever the machine's load does to the wall-clock times; and when it loaded the
// catalog (debug), so that tests wait for that rather than for a fixed time.
const refusals: number[] = [];
let catalogLoads = 0;
/** How many users the proxy's last loaded catalog snapshot held. */
let loadedUsers = -1;
const logger = createLogger('debug', {
  write: (line: string) => {
    const entry = JSON.parse(line) as {
      event?: string;
      result?: string;
      delay_ms?: number;
      msg?: string;
      users?: number;
    };
    if (entry.event === 'auth' && entry.result === 'refused') refusals.push(entry.delay_ms ?? -1);
    if (entry.event === 'catalog' && entry.msg === 'catalog loaded') {
      catalogLoads += 1;
      loadedUsers = entry.users ?? -1;
    }
  },
});
const f = await orgFixture(t, {}, { logger });

/** Resolves once the proxy has loaded the catalog more often than `since` times. */
async function catalogLoadedAfter(since: number): Promise<boolean> {
  return waitFor(() => catalogLoads > since, 10_000);
}

interface Refusal {
  severity?: string;
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
}

/** Connects with pg; resolves to the error's fields and how long the refusal took. */
async function attempt(
  database: string,
  user: string,
  password: string,
): Promise<{ ms: number; error: Refusal | undefined }> {
  const client = new pg.Client({ host: '127.0.0.1', port: f.proxy.port, database, user, password });
  client.on('error', () => undefined);
  const started = Date.now();
  const error = await client.connect().then(
    async () => {
      await client.end();
      return undefined;
    },
    (e: unknown) => e as Refusal,
  );
  return { ms: Date.now() - started, error };
}

const fields = (e: Refusal | undefined) => ({
  severity: e?.severity,
  code: e?.code,
  message: e?.message,
  detail: e?.detail,
  hint: e?.hint,
});

t.test('failed logins from one address are slowed down, and a success forgives', async (t) => {
  const tries = [];
  for (let i = 0; i < 5; i++) tries.push(await attempt('acme-analytics', 'alice', 'wrong'));
  for (const { error } of tries) {
    t.same(fields(error), {
      severity: 'FATAL',
      code: '28P01',
      message: 'password authentication failed for user "alice"',
      detail: undefined,
      hint: undefined,
    });
  }
  t.same(refusals, [0, 0, 0, 250, 500], 'held back: none for 3 failures, then 250 ms, 500 ms');
  const ms = tries.map((x) => x.ms);
  t.ok(ms[3]! >= 240 && ms[4]! >= 490, `and the client waited that long (${ms.join(', ')} ms)`);

  const ok = await attempt('acme-analytics', 'alice', 'alice-at-acme');
  t.equal(ok.error, undefined, 'the right password still gets in');
  const after = await attempt('acme-analytics', 'alice', 'wrong');
  t.equal(after.error?.code, '28P01');
  t.equal(refusals.at(-1), 0, 'after a success a failure is answered at once again');
});

t.test('an unknown user and a wrong password are the same error in every field', async (t) => {
  const wrong = await attempt('acme-analytics', 'alice', 'not-her-password');
  const unknown = await attempt('acme-analytics', 'mallory', 'not-her-password');
  const expected = (user: string) => ({
    severity: 'FATAL',
    code: '28P01',
    message: `password authentication failed for user "${user}"`,
    detail: undefined,
    hint: undefined,
  });
  t.same(fields(wrong.error), expected('alice'));
  t.same(fields(unknown.error), expected('mallory'));
  // Succeed once, so that the next tests start unthrottled.
  t.equal((await attempt('acme-analytics', 'alice', 'alice-at-acme')).error, undefined);
});

t.test(
  'startup parameters reach the pooled session and leave with the client; pgvpd.* ones never arrive',
  async (t) => {
    const sql = postgres({
      host: '127.0.0.1',
      port: f.proxy.port,
      database: 'beta-db',
      username: 'alice',
      password: 'alice-at-beta',
      max: 1,
      onnotice: () => undefined,
      connection: {
        TimeZone: 'Asia/Tokyo',
        IntervalStyle: 'iso_8601',
        application_name: 'hardening',
        'pgvpd.tenant_id': 'forged',
        'pgvpd.anything': 'forged',
      },
    });
    const [row] = await sql<
      {
        pid: number;
        tz: string;
        style: string;
        app: string;
        anything: string | null;
        tenant_setting: string | null;
        tenant: string;
      }[]
    >`select pg_backend_pid() as pid, current_setting('TimeZone') as tz,
             current_setting('IntervalStyle') as style, current_setting('application_name') as app,
             current_setting('pgvpd.anything', true) as anything,
             current_setting('pgvpd.tenant_id', true) as tenant_setting,
             pgvpd.current_tenant_id() as tenant`;
    await sql.end({ timeout: 1 });
    t.match(row, { tz: 'Asia/Tokyo', style: 'iso_8601', app: 'hardening', tenant: f.orgs.beta });
    t.equal(row!.anything, null, 'a pgvpd.* startup parameter is not applied');
    // The guard path sets pgvpd.tenant_id itself (from the verified token); the SQL path not at all.
    t.ok(
      row!.tenant_setting === null || row!.tenant_setting === f.orgs.beta,
      `pgvpd.tenant_id is not the client's (${String(row!.tenant_setting)})`,
    );

    // The release (ROLLBACK, DISCARD ALL) runs after the client left.
    t.ok(await resetDone(f.db, row!.pid), 'the session is reset and idle');
    const next = new pg.Client({
      host: '127.0.0.1',
      port: f.proxy.port,
      database: 'beta-db',
      user: 'alice',
      password: 'alice-at-beta',
    });
    next.on('error', () => undefined);
    await next.connect();
    t.teardown(() => next.end().catch(() => undefined));
    const { rows } = await next.query<{ pid: number; tz: string; style: string; app: string }>(
      `select pg_backend_pid() as pid, current_setting('TimeZone') as tz,
              current_setting('IntervalStyle') as style, current_setting('application_name') as app`,
    );
    const server = await f.db.query<{ tz: string }>(`select current_setting('TimeZone') as tz`);
    t.same(
      rows[0],
      // application_name falls back to what the pool logged in with.
      { pid: row!.pid, tz: server.rows[0]!.tz, style: 'postgres', app: 'pgvpd' },
      'the next client of the same backend has none of them',
    );
  },
);

t.test(
  'resolvers through the proxy: a failing required one refuses, values reach the session',
  async (t) => {
    t.teardown(() => f.db.query('delete from pgvpd_private.resolvers'));
    await f.db.query(
      `create function public.hardening_broken(p_context jsonb) returns jsonb language plpgsql
       as $$ begin raise exception 'no plan for %', p_context ->> 'tenant'; end $$`,
    );
    await f.db.query(
      `select pgvpd.resolver_add('public.hardening_broken(jsonb)'::regprocedure, 1, true, 'plans')`,
    );
    const refused = await attempt('acme-analytics', 'alice', 'alice-at-acme');
    t.same(fields(refused.error), {
      severity: 'FATAL',
      code: '28000',
      message: 'could not establish the tenant context for this session',
      detail: undefined,
      hint: undefined,
    });

    await f.db.query('delete from pgvpd_private.resolvers');
    await f.db.query(
      `create function public.hardening_plan(p_context jsonb) returns jsonb language sql
       as $$ select jsonb_build_object('plan', 'gold-' || (p_context ->> 'user')) $$`,
    );
    await f.db.query(`select pgvpd.resolver_add('public.hardening_plan(jsonb)'::regprocedure, 1)`);
    const client = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
    const { rows } = await client.query<{ plan: string; tenant: string }>(
      `select pgvpd.context('plan') as plan, pgvpd.current_tenant_id() as tenant`,
    );
    t.same(
      rows,
      [{ plan: 'gold-alice', tenant: f.orgs.acme }],
      'the pool still serves, with the value',
    );
  },
);

t.test(
  'changes made while the catalog connection is down are seen after it reconnects',
  async (t) => {
    const beforeAdd = catalogLoads;
    const usersBefore = loadedUsers;
    await f.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
      f.orgs.beta,
      'carol',
      (await import('../../proxy/auth/scram-verifier.js')).makeVerifier('carol-pass'),
      f.connectAs,
    ]);
    // A reload the previous test's resolver changes asked for may still be in flight and read the
    // catalog before carol existed: wait for the load that holds her.
    t.ok(
      await waitFor(() => catalogLoads > beforeAdd && loadedUsers === usersBefore + 1, 10_000),
      'the proxy reloaded the catalog (NOTIFY) and it holds carol',
    );
    t.equal((await attempt('beta-db', 'carol', 'carol-pass')).error, undefined, 'carol can log in');

    const killed = await f.db.query<{ n: number }>(
      `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where application_name = 'pgvpd-catalog' and datname = current_database()`,
    );
    t.equal(killed.rows[0]!.n, 1, 'the catalog connection was ended');
    const beforeReconnect = catalogLoads;
    // At once, before the proxy reconnects (it retries every second): no NOTIFY reaches it.
    await f.db.query(`select pgvpd.user_remove($1, 'carol')`, [f.orgs.beta]);
    await f.db.query('select pgvpd.org_suspend($1)', [f.orgs.acme]);

    // No NOTIFY can reach a closed connection: the next load is the one after reconnecting.
    t.ok(await catalogLoadedAfter(beforeReconnect), 'the proxy reconnected and reloaded');
    t.same(fields((await attempt('beta-db', 'carol', 'carol-pass')).error), {
      severity: 'FATAL',
      code: '28P01',
      message: 'password authentication failed for user "carol"',
      detail: undefined,
      hint: undefined,
    });
    const suspended = await attempt('acme-analytics', 'alice', 'alice-at-acme');
    t.same(
      fields(suspended.error),
      {
        severity: 'FATAL',
        code: '28000',
        message: 'the organization of database "acme-analytics" is suspended',
        detail: undefined,
        hint: "Ask the organization's administrator to resume it.",
      },
      'the org suspended meanwhile is refused',
    );
    await f.db.query('select pgvpd.org_resume($1)', [f.orgs.acme]);
  },
);
