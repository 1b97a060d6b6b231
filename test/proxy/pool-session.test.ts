// SessionPool against a real PostgreSQL: reuse of one backend, the reset between clients (each kind
// of session state is set, the session released and checked out again, then looked for), the
// 53300 timeout, sessions that die or age, idle reaping, FIFO order under contention, and close.
import { setTimeout as sleep } from 'node:timers/promises';
import { serialize } from '../../proxy/protocol/encode.js';
import t from 'tap';
import type { ProxyError } from '../../proxy/errors.js';
import { createLogger } from '../../proxy/logger.js';
import { SessionPool, type SessionPoolOptions } from '../../proxy/pool/session-pool.js';
import { loginUpstream, type PoolKey, type PooledSession } from '../../proxy/upstream/login.js';
import {
  createTestDatabase,
  poolKeyFor,
  type TestDatabase,
  type TestLike,
} from '../support/postgres.js';
import { sqlstate, type LoginRole } from '../support/pgvpd.js';
import { parseBackend } from '../support/wire.js';

interface Fixture {
  db: TestDatabase;
  role: LoginRole;
  key: PoolKey;
  pool: SessionPool;
  logins: number;
}

async function fixture(
  t: TestLike,
  options: Partial<Omit<SessionPoolOptions, 'login' | 'logger'>> = {},
): Promise<Fixture> {
  const db = await createTestDatabase(t);
  // A plain login role (the pgvpd schema is not needed to pool sessions).
  const role = await plainRole(t, db);
  const key: PoolKey = poolKeyFor(db, role.name);
  const f: Fixture = { db, role, key, pool: undefined as unknown as SessionPool, logins: 0 };
  f.pool = new SessionPool({
    size: 2,
    checkoutTimeoutMs: 2000,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    ...options,
    login: (k) => {
      f.logins += 1;
      return loginUpstream(k, { password: role.password });
    },
    logger: createLogger('silent'),
  });
  t.teardown(() => f.pool.close());
  return f;
}

async function plainRole(t: TestLike, db: TestDatabase): Promise<LoginRole> {
  const name = `pgvpd_pool_${Math.random().toString(16).slice(2, 10)}`;
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  await db.query(`create role ${name} login password '${password}' nosuperuser`);
  await db.query(`grant create on database ${db.name} to ${name}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  const url = db.urlFor(name, password);
  return { name, password, url, connect: () => Promise.reject(new Error('not used')) };
}

/** The first column of the first row of a simple query on the session, as text. */
async function value(session: PooledSession, sql: string): Promise<string | null> {
  session.socket.write(serialize.query(sql));
  const outcome: { value: string | null; failure: { code?: string; message: string } | undefined } =
    { value: null, failure: undefined };
  for (;;) {
    const message = await session.reader.message(1024 * 1024);
    for (const parsed of parseBackend(message.raw)) {
      const m = parsed as unknown as {
        name: string;
        fields?: (string | null)[];
        code?: string;
        message: string;
      };
      if (m.name === 'dataRow' && outcome.value === null) outcome.value = m.fields?.[0] ?? null;
      if (m.name === 'error') outcome.failure = m;
    }
    if (message.code === 0x5a) break; // ReadyForQuery
  }
  const failure = outcome.failure;
  if (failure) throw Object.assign(new Error(failure.message), { code: failure.code });
  return outcome.value;
}

async function backendAlive(db: TestDatabase, pid: number): Promise<boolean> {
  const { rows } = await db.query('select 1 from pg_stat_activity where pid = $1', [pid]);
  return rows.length > 0;
}

async function until(condition: () => Promise<boolean> | boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await condition()) return true;
    await sleep(20);
  }
  return condition();
}

t.test('checkout, release and checkout again returns the same backend', async (t) => {
  const f = await fixture(t);
  const first = await f.pool.checkout(f.key);
  const pid = first.backendPid;
  t.equal(await value(first, 'select pg_backend_pid()'), String(pid));
  await f.pool.release(first);
  t.match(f.pool.stats(), { idle: 1, busy: 0, opened: 1 });
  const second = await f.pool.checkout(f.key);
  t.equal(second, first, 'the same session object');
  t.equal(second.backendPid, pid, 'the same backend');
  t.equal(await value(second, 'select current_user'), f.role.name, 'still logged in as the role');
  t.equal(f.logins, 1, 'one login for both checkouts');
  await f.pool.release(second);
});

t.test('nothing of a client session survives its release', async (t) => {
  const f = await fixture(t, { size: 1 });
  await f.db.query(`create role ${f.role.name}_other nologin`);
  await f.db.query(`grant ${f.role.name}_other to ${f.role.name}`);
  t.teardown(() => f.db.query(`drop role if exists ${f.role.name}_other`));
  await f.db.query('create table kept(id int)');
  await f.db.query(`grant select, insert on kept to ${f.role.name}`);
  const cases: { name: string; set: string[]; check: string; expected: string | null }[] = [
    {
      name: 'a SET setting',
      set: ["set work_mem = '7MB'"],
      check: 'show work_mem',
      expected: '4MB',
    },
    {
      name: 'a setting made with set_config',
      set: ["select set_config('statement_timeout', '1234', false)"],
      check: 'show statement_timeout',
      expected: '0',
    },
    {
      name: 'the pgvpd.context setting',
      set: ["select set_config('pgvpd.context', 'a-token', false)"],
      check: "select coalesce(current_setting('pgvpd.context', true), '')",
      expected: '',
    },
    {
      name: 'a SET ROLE',
      set: [`set role ${f.role.name}_other`],
      check: 'select current_user',
      expected: f.role.name,
    },
    {
      name: 'a temp table',
      set: ['create temp table leftover(id int)', 'insert into leftover values (1)'],
      check: "select to_regclass('pg_temp.leftover')::text",
      expected: null,
    },
    {
      name: 'a prepared statement',
      set: ['prepare leftover as select 1'],
      check: 'select count(*) from pg_prepared_statements',
      expected: '0',
    },
    {
      name: 'a cursor WITH HOLD',
      set: ['declare leftover cursor with hold for select 1'],
      check: 'select count(*) from pg_cursors',
      expected: '0',
    },
    {
      name: 'a LISTEN',
      set: ['listen leftover'],
      check: 'select count(*) from pg_listening_channels()',
      expected: '0',
    },
    {
      name: 'an open transaction and its writes',
      set: ['begin', 'insert into kept values (1)'],
      check: 'select count(*) from kept',
      expected: '0',
    },
    {
      name: 'a failed transaction',
      set: ['begin', 'select 1/0'],
      check: "select 'usable'",
      expected: 'usable',
    },
    {
      name: 'a sequence value (currval)',
      set: ['create temp sequence s', "select nextval('s')"],
      check: "select to_regclass('pg_temp.s')::text",
      expected: null,
    },
  ];
  const session = await f.pool.checkout(f.key);
  const pid = session.backendPid;
  await f.pool.release(session);
  for (const c of cases) {
    const dirty = await f.pool.checkout(f.key);
    for (const sql of c.set) await value(dirty, sql).catch(() => undefined);
    await f.pool.release(dirty);
    const clean = await f.pool.checkout(f.key);
    t.equal(clean.backendPid, pid, `${c.name}: the same backend is reused`);
    t.equal(await value(clean, c.check), c.expected, `${c.name}: gone after the release`);
    await f.pool.release(clean);
  }
});

t.test('an advisory lock held by a client is released with the session', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  await value(session, 'select pg_advisory_lock(7406002)');
  const held = (): Promise<number> =>
    f.db
      .query<{ n: number }>(
        "select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = $1",
        [session.backendPid],
      )
      .then((r) => r.rows[0]!.n);
  t.equal(await held(), 1, 'held while checked out');
  await f.pool.release(session);
  t.equal(await held(), 0, 'released by the reset');
  const again = await f.pool.checkout(f.key);
  t.equal(again.backendPid, session.backendPid, 'and the session is reused');
  await f.pool.release(again);
});

t.test('the one-message reset ends a transaction the client left open or aborted', async (t) => {
  // ROLLBACK and the state reset share one Query message (DISCARD ALL could not: 25001 below);
  // a ROLLBACK in a multi-statement Query ends the block it closes, the rest runs after it.
  const f = await fixture(t, { size: 1 });
  const first = await f.pool.checkout(f.key);
  const pid = first.backendPid;
  t.equal(await sqlstate(value(first, 'ROLLBACK; DISCARD ALL')), '25001');
  await value(first, 'begin');
  await value(first, "select set_config('search_path', 'left_open', true)");
  await f.pool.release(first);
  const second = await f.pool.checkout(f.key);
  t.equal(second.backendPid, pid, 'open: the backend is reused');
  t.equal(
    await value(second, 'select (now() = statement_timestamp())::text'),
    'true',
    'no transaction',
  );
  t.equal(await value(second, 'show search_path'), '"$user", public', 'its setting rolled back');
  await value(second, 'begin');
  t.equal(await sqlstate(value(second, 'select 1/0')), '22012');
  await f.pool.release(second);
  const third = await f.pool.checkout(f.key);
  t.equal(third.backendPid, pid, 'aborted: the backend is reused');
  t.equal(await value(third, 'select 1'), '1', 'and takes statements again');
  t.match(f.pool.stats(), { idle: 0, busy: 1 });
  await f.pool.release(third);
});

t.test('a release told idle by mistake ends a session left in a transaction', async (t) => {
  // The idle hint (the loan's guess from the backend's last bytes) leaves the ROLLBACK out of the
  // reset; when it is wrong the reset runs inside the client's transaction and the session ends.
  const f = await fixture(t, { size: 1 });
  for (const [name, statements] of [
    ['open', ['begin']],
    ['aborted', ['begin', 'select 1/0']],
  ] as const) {
    const session = await f.pool.checkout(f.key);
    const pid = session.backendPid;
    for (const sql of statements) await value(session, sql).catch(() => undefined);
    await f.pool.release(session, true);
    const next = await f.pool.checkout(f.key);
    t.not(next.backendPid, pid, `${name}: the next checkout gets another backend`);
    t.ok(await until(async () => !(await backendAlive(f.db, pid))), `${name}: the old one ended`);
    await f.pool.release(next, true);
    const again = await f.pool.checkout(f.key);
    t.equal(again.backendPid, next.backendPid, `${name}: an idle release told idle is reused`);
    await f.pool.release(again);
  }
});

t.test('runExtended runs statements and fails with their SQLSTATE', async (t) => {
  const f = await fixture(t);
  const session = await f.pool.checkout(f.key);
  await f.pool.runExtended(session, 'select set_config($1, $2, false)', [
    'application_name',
    "o'brien; app",
  ]);
  t.equal(
    session.parameters.get('application_name'),
    "o'brien; app",
    'ParameterStatus updates the session parameters',
  );
  t.equal(await value(session, 'show application_name'), "o'brien; app");
  await f.pool.runExtended(session, "set TimeZone = 'UTC'", []);
  t.equal(session.parameters.get('TimeZone'), 'UTC');
  const failed = (await f.pool
    .runExtended(session, 'select 1/0', [])
    .catch((e: unknown) => e)) as ProxyError;
  t.match(failed, {
    code: '22012',
    message: 'division by zero',
    kind: 'upstream_statement_failed',
  });
  t.equal(
    await sqlstate(f.pool.runExtended(session, 'select $1::int', ['x'])),
    '22P02',
    'a bad parameter',
  );
  await f.pool.runExtended(session, 'select 1', []);
  t.pass('the session is usable after a failed statement');
  await f.pool.release(session);
  const again = await f.pool.checkout(f.key);
  t.equal(again.parameters.get('application_name'), 'pgvpd', 'the reset reports the old value');
  await f.pool.release(again);
});

t.test('a full pool makes checkout wait, then fail with 53300 after the timeout', async (t) => {
  const f = await fixture(t, { size: 1, checkoutTimeoutMs: 300 });
  const held = await f.pool.checkout(f.key);
  const started = Date.now();
  const error = (await f.pool.checkout(f.key).catch((e: unknown) => e)) as ProxyError;
  const waited = Date.now() - started;
  t.equal(error.code, '53300');
  t.equal(
    error.message,
    `pool for role "${f.role.name}" on database "${f.db.name}" is exhausted (size 1); timed out after 300 ms`,
  );
  t.ok(waited >= 290 && waited < 1500, `waited about the timeout (${waited} ms)`);
  t.match(f.pool.stats(), { waiting: 0, busy: 1, timeouts: 1 });
  await f.pool.release(held);
});

t.test('a session killed upstream while checked out is not reused', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  await f.db.query('select pg_terminate_backend($1)', [session.backendPid]);
  await until(() => session.broken);
  t.equal(session.broken, true, 'the session knows its backend is gone');
  await f.pool.release(session);
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid, 'the next checkout gets another backend');
  t.equal(await value(next, 'select 1'), '1');
  await f.pool.release(next);
});

t.test('a session killed before the pool notices is caught by the reset', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  await f.db.query('select pg_terminate_backend($1)', [session.backendPid]);
  // Released at once: the FATAL may still be in flight.
  await f.pool.release(session);
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid);
  await f.pool.release(next);
});

t.test('a session killed while idle is not handed out', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  await f.pool.release(session);
  await f.db.query('select pg_terminate_backend($1)', [session.backendPid]);
  t.ok(await until(() => f.pool.stats().idle === 0), 'it leaves the idle list');
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid);
  await f.pool.release(next);
});

t.test('a session with output its client never read is not reused', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  session.socket.write(serialize.query('select pg_sleep(0.1), 42'));
  await f.pool.release(session);
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid);
  t.ok(await until(async () => !(await backendAlive(f.db, session.backendPid))), 'and is ended');
  await f.pool.release(next);
});

t.test('a discarded session is ended and its place freed', async (t) => {
  const f = await fixture(t, { size: 1 });
  const session = await f.pool.checkout(f.key);
  f.pool.discard(session);
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid);
  t.ok(await until(async () => !(await backendAlive(f.db, session.backendPid))), 'backend gone');
  await f.pool.release(next);
});

t.test('a session older than maxLifetime is replaced, never mid-checkout', async (t) => {
  const f = await fixture(t, { size: 1, maxLifetimeMs: 300 });
  const session = await f.pool.checkout(f.key);
  await sleep(400);
  t.equal(await value(session, 'select 1'), '1', 'a checked-out session is not cut off');
  await f.pool.release(session);
  t.ok(
    await until(async () => !(await backendAlive(f.db, session.backendPid))),
    'ended on release',
  );
  const next = await f.pool.checkout(f.key);
  t.not(next.backendPid, session.backendPid);
  await f.pool.release(next);
  await sleep(400);
  const third = await f.pool.checkout(f.key);
  t.not(third.backendPid, next.backendPid, 'an idle one that aged is not handed out');
  await f.pool.release(third);
});

t.test('idle sessions are closed after idleTimeout', async (t) => {
  // a expires 1 s after its release, b 0.8 s later: a window wide enough for a loaded machine
  // to see a gone and b still there.
  const f = await fixture(t, { idleTimeoutMs: 1000, reapIntervalMs: 50 });
  const a = await f.pool.checkout(f.key);
  const b = await f.pool.checkout(f.key);
  await f.pool.release(a);
  await sleep(800);
  await f.pool.release(b);
  t.ok(await until(() => f.pool.stats().idle === 1, 1000), 'the older idle session goes first');
  t.ok(await until(async () => !(await backendAlive(f.db, a.backendPid))), 'its backend is ended');
  t.ok(await backendAlive(f.db, b.backendPid), 'the other is still kept');
  t.ok(await until(() => f.pool.stats().idle === 0, 2000), 'then the other');
  t.same(f.pool.stats().keys, [], 'and the empty key is forgotten');
});

t.test('with size 2, five concurrent checkouts are served in FIFO order', async (t) => {
  const f = await fixture(t, { size: 2, checkoutTimeoutMs: 5000 });
  const served: number[] = [];
  const pids = new Set<number>();
  let concurrent = 0;
  let peak = 0;
  const clients = [0, 1, 2, 3, 4].map(async (index) => {
    const session = await f.pool.checkout(f.key);
    served.push(index);
    pids.add(session.backendPid);
    concurrent += 1;
    peak = Math.max(peak, concurrent);
    await value(session, 'select pg_sleep(0.05)');
    concurrent -= 1;
    await f.pool.release(session);
  });
  await sleep(0);
  t.match(f.pool.stats(), { opening: 2, waiting: 3 }, 'two open, three wait');
  await Promise.all(clients);
  // The first two log in side by side; on a loaded machine one login may take so long that
  // the other session serves several waiters first. What must hold in any timing: everyone is
  // served, the waiters in the order they asked, never more than two at once, two logins.
  t.same([...served].sort(), [0, 1, 2, 3, 4], 'everyone is served');
  t.same(
    served.filter((index) => index >= 2),
    [2, 3, 4],
    'the waiters are served in the order they asked',
  );
  t.ok(peak >= 1 && peak <= 2, `never more than size at once (peak ${String(peak)})`);
  t.ok(pids.size >= 1 && pids.size <= 2, 'on at most two backends');
  t.equal(f.logins, 2, 'both places were opened');
});

t.test('a failed login fails its checkout and frees its place', async (t) => {
  const db = await createTestDatabase(t);
  let attempts = 0;
  const key: PoolKey = poolKeyFor(db, 'pgvpd_scram_user');
  const pool = new SessionPool({
    size: 1,
    checkoutTimeoutMs: 1000,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    login: (k) => {
      attempts += 1;
      return loginUpstream(k, { password: attempts === 1 ? 'wrong' : 'scram-pass' });
    },
    logger: createLogger('silent'),
  });
  t.teardown(() => pool.close());
  const [first, second] = await Promise.allSettled([pool.checkout(key), pool.checkout(key)]);
  t.match(first, { status: 'rejected', reason: { code: '28P01' } }, 'the first login is refused');
  t.match(second, { status: 'fulfilled' }, 'the waiting checkout logs in in its place');
  if (second.status === 'fulfilled') await pool.release(second.value);
  t.equal(attempts, 2);
});

t.test('an aborted checkout leaves the queue', async (t) => {
  const f = await fixture(t, { size: 1 });
  const held = await f.pool.checkout(f.key);
  const controller = new AbortController();
  const aborted = f.pool.checkout(f.key, controller.signal);
  const next = f.pool.checkout(f.key);
  controller.abort(new Error('client left'));
  await t.rejects(aborted, { message: 'client left' });
  t.match(f.pool.stats(), { waiting: 1 });
  await f.pool.release(held);
  const served = await next;
  t.equal(served.backendPid, held.backendPid, 'the next waiter gets the session');
  await f.pool.release(served);
});

t.test('sessions of different keys are pooled apart', async (t) => {
  const f = await fixture(t, { size: 1 });
  const other = await plainRole(t, f.db);
  const pool = new SessionPool({
    size: 1,
    checkoutTimeoutMs: 300,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    login: (k) =>
      loginUpstream(k, { password: k.role === other.name ? other.password : f.role.password }),
    logger: createLogger('silent'),
  });
  t.teardown(() => pool.close());
  const a = await pool.checkout(f.key);
  const b = await pool.checkout({ ...f.key, role: other.name });
  t.equal(await value(b, 'select current_user'), other.name, 'a full key does not block another');
  t.equal(pool.stats().keys.length, 2);
  await pool.release(a);
  await pool.release(b);
});

t.test('close ends every session and fails waiting and later checkouts with 57P01', async (t) => {
  const f = await fixture(t, { size: 1 });
  const other = await plainRole(t, f.db);
  const pool = new SessionPool({
    size: 1,
    checkoutTimeoutMs: 5000,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    login: (k) =>
      loginUpstream(k, { password: k.role === other.name ? other.password : f.role.password }),
    logger: createLogger('silent'),
  });
  const otherKey = { ...f.key, role: other.name };
  const busy = await pool.checkout(f.key);
  const waiting = sqlstate(pool.checkout(f.key));
  const idle = await pool.checkout(otherKey);
  await pool.release(idle);
  t.match(pool.stats(), { idle: 1, busy: 1, waiting: 1 });
  await pool.close();
  t.equal(await waiting, '57P01', 'a waiting checkout');
  t.equal(await sqlstate(pool.checkout(f.key)), '57P01', 'a checkout after close');
  t.equal(busy.socket.destroyed && idle.socket.destroyed, true, 'close waits for the sockets');
  t.ok(
    await until(
      async () =>
        !(await backendAlive(f.db, idle.backendPid)) &&
        !(await backendAlive(f.db, busy.backendPid)),
    ),
    'idle and checked-out backends are ended',
  );
  await pool.release(busy);
  t.pass('a release after close is harmless');
});

t.test('a session released twice goes back to the pool once', async (t) => {
  const f = await fixture(t, { size: 2 });
  const session = await f.pool.checkout(f.key);
  await Promise.all([f.pool.release(session), f.pool.release(session)]);
  await f.pool.release(session);
  t.match(f.pool.stats(), { idle: 1, busy: 0, closed: 0 });
  const again = await f.pool.checkout(f.key);
  const other = await f.pool.checkout(f.key);
  t.equal(again.backendPid, session.backendPid);
  t.not(other.backendPid, session.backendPid, 'not handed out twice');
  await f.pool.release(again);
  await f.pool.release(other);
});

// Issue 11, finding 5: a checkout made before the client authenticated (checkoutIdle) is tentative,
// and a checkout that would otherwise wait takes it back.
t.test(
  'finding 5 (pool): a tentative checkout is taken back for a waiting checkout, after the statement under way on it',
  async (t) => {
    const f = await fixture(t, { size: 1 });
    await f.pool.release(await f.pool.checkout(f.key));
    const events: string[] = [];
    let running: Promise<void> = Promise.resolve();
    const tentative = f.pool.checkoutIdle(f.key, () => {
      events.push('holder told');
      return running;
    });
    if (!tentative) throw new Error('no idle session');
    t.match(f.pool.stats(), { busy: 1, tentative: 1 });
    running = f.pool
      .runExtended(
        tentative,
        "select set_config('application_name', 'holder', false), pg_sleep(0.3)",
        [],
      )
      .then(() => {
        events.push('holder statement done');
      });
    const waiter = f.pool.checkout(f.key).then((session) => {
      events.push('waiter served');
      return session;
    });
    t.same(events, ['holder told'], 'the holder is told at once');
    t.notOk(f.pool.confirm(tentative), 'a session taken back cannot be confirmed');
    // A former holder that releases or discards it anyway changes nothing.
    f.pool.discard(tentative, 'former holder');
    await f.pool.release(tentative);
    const served = await waiter;
    t.same(events, ['holder told', 'holder statement done', 'waiter served']);
    t.equal(served.backendPid, tentative.backendPid, 'the same backend');
    t.equal(await value(served, 'show application_name'), 'pgvpd', 'reset before it was handed on');
    t.match(f.pool.stats(), { busy: 1, tentative: 0, opened: 1, closed: 0, reclaimed: 1 });
    await f.pool.release(served);
  },
);

t.test('finding 5 (pool): a confirmed checkout is never taken back', async (t) => {
  const f = await fixture(t, { size: 1, checkoutTimeoutMs: 300 });
  await f.pool.release(await f.pool.checkout(f.key));
  let told = 0;
  const session = f.pool.checkoutIdle(f.key, () => {
    told += 1;
    return Promise.resolve();
  });
  if (!session) throw new Error('no idle session');
  t.ok(f.pool.confirm(session), 'confirmed');
  t.notOk(f.pool.confirm(session), 'once');
  const error = (await f.pool.checkout(f.key).catch((e: unknown) => e)) as ProxyError;
  t.equal(error.code, '53300', 'the next checkout waits and times out as usual');
  t.equal(told, 0, 'the holder was never told');
  t.match(f.pool.stats(), { busy: 1, tentative: 0, reclaimed: 0 });
  await f.pool.release(session);
});

t.test(
  'finding 5 (pool): a holder that does not let go within the reset timeout loses the session for good',
  async (t) => {
    const f = await fixture(t, { size: 1, resetTimeoutMs: 200 });
    await f.pool.release(await f.pool.checkout(f.key));
    const session = f.pool.checkoutIdle(f.key, () => new Promise(() => undefined));
    if (!session) throw new Error('no idle session');
    const served = await f.pool.checkout(f.key);
    t.not(served.backendPid, session.backendPid, 'the waiter gets a new backend');
    t.ok(await until(async () => !(await backendAlive(f.db, session.backendPid))), 'old one ended');
    t.match(f.pool.stats(), { busy: 1, opened: 2, closed: 1, reclaimed: 1 });
    await f.pool.release(served);
  },
);

t.test('finding 5 (pool): checkoutIdle never takes a session a checkout waits for', async (t) => {
  const f = await fixture(t, { size: 1 });
  const held = await f.pool.checkout(f.key);
  const waiting = f.pool.checkout(f.key);
  t.equal(
    f.pool.checkoutIdle(f.key, () => Promise.resolve()),
    undefined,
    'none idle, and a checkout waits',
  );
  await f.pool.release(held);
  const served = await waiting;
  t.equal(served.backendPid, held.backendPid);
  t.equal(
    f.pool.checkoutIdle(f.key, () => Promise.resolve()),
    undefined,
    'none idle while it is lent',
  );
  await f.pool.release(served);
  const tentative = f.pool.checkoutIdle(f.key, () => Promise.resolve());
  t.equal(tentative?.backendPid, held.backendPid, 'idle again: taken at once');
  if (tentative) await f.pool.release(tentative);
  t.match(f.pool.stats(), { idle: 1, busy: 0, tentative: 0 });
});
