// App mode's dedicated pipe, how a connect gets its context and its connection (issue 15's
// dedicated-path target):
// - the token goes in as the database's context path says: on the SQL path with the built-in
//   set_config (the accessors check it on every statement), on the guard path with
//   pgvpd.set_context; a database whose SQL predates pgvpd.proxy_context_path gets set_context;
// - what that relies on: on the SQL path a setting that is not the record matches nothing,
//   statement by statement (the accessors' property, shown through the proxy);
// - the early Parse has a Sync of its own: a role's statement_timeout does not run while the
//   issue waits;
// - upstream_spares: connections opened ahead, nothing sent on them until a client's startup
//   packet; replaced when taken, when past upstream_spare_lifetime, when the server ends them or
//   sends a byte; one that answers 57P03 or closes gives way to a new connection; closed at
//   shutdown.
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { backendPid, connect } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { proxyFixture, visible } from './fixture.js';
import { failure } from './org-support.js';
import { StatementLog, type TxOrgs } from './tx-fixture.js';

async function tenantOf(client: { query: (sql: string) => Promise<{ rows: unknown[] }> }) {
  const { rows } = await client.query('select pgvpd.current_tenant_id() as tenant');
  return (rows[0] as { tenant: string | null }).tenant;
}

t.test('the token goes in as the context path says', async (t) => {
  const f = await proxyFixture(t);
  const path = (await f.db.query<{ path: string }>('select path from pgvpd.context_path()'))
    .rows[0]!.path;
  const log = await StatementLog.start({
    f: { connectAs: f.app.name },
    db: f.db,
  } as unknown as TxOrgs);
  const client = await f.connect(f.userFor('acme'));
  t.equal(await tenantOf(client), 'acme');
  t.same(await visible(client), { acme: 2, globex: 0, total: 2 }, 'acme sees its 2 rows');
  if (!log) {
    t.comment('the server’s log is not readable here: statements not read');
    return;
  }
  const statements = log.statements(await backendPid(client));
  t.same(
    statements[0],
    path === 'sql'
      ? "select pg_catalog.set_config('pgvpd.context', $1, false)"
      : 'select pgvpd.set_context($1)',
    `${path} path: the backend's first statement`,
  );
  if (path === 'sql')
    t.notOk(
      statements.some((s) => s.includes('pgvpd.set_context')),
      'set_context is not called on the SQL path',
    );
});

t.test('only pgvpd_proxy (and pgvpd_admin) may call proxy_context_path (7.11)', async (t) => {
  const f = await proxyFixture(t);
  const app = await connect(f.app.url);
  t.teardown(() => app.end());
  t.same(
    await failure(app.query('select pgvpd.proxy_context_path()')),
    {
      severity: 'ERROR',
      code: '42501',
      message: 'permission denied for function proxy_context_path',
      hint: undefined,
    },
    'an application role: 42501',
  );
  const proxy = await connect(f.proxyRole.url);
  t.teardown(() => proxy.end());
  const { rows } = await proxy.query<{ path: string }>('select pgvpd.proxy_context_path() as path');
  const expected = (await f.db.query<{ path: string }>('select path from pgvpd.context_path()'))
    .rows[0]!.path;
  t.equal(rows[0]!.path, expected, 'the proxy: the path setup chose');
  const { rows: who } = await f.db.query<{ who: string | null }>(
    `select string_agg(r.rolname, ',' order by r.rolname) as who from pg_roles r
      where has_function_privilege(r.oid, 'pgvpd.proxy_context_path()', 'EXECUTE')
        and not r.rolsuper
        and not pg_has_role(r.oid, 'pgvpd_proxy', 'MEMBER')
        and not pg_has_role(r.oid, 'pgvpd_admin', 'MEMBER')`,
  );
  t.equal(who[0]!.who, null, 'no role but members of pgvpd_proxy and pgvpd_admin');
});

t.test('a database whose SQL predates proxy_context_path gets set_context', async (t) => {
  const f = await proxyFixture(t);
  await f.db.query('drop function pgvpd.proxy_context_path()');
  const log = await StatementLog.start({
    f: { connectAs: f.app.name },
    db: f.db,
  } as unknown as TxOrgs);
  const client = await f.connect(f.userFor('globex'));
  t.equal(await tenantOf(client), 'globex');
  t.same(await visible(client), { acme: 0, globex: 3, total: 3 });
  const again = await f.connect(f.userFor('acme'));
  t.equal(await tenantOf(again), 'acme', 'and the next client too');
  if (log)
    t.equal(
      log.statements(await backendPid(again))[0],
      'select pgvpd.set_context($1)',
      'its backend ran set_context',
    );
});

t.test(
  'what the SQL path relies on: a setting that is not the record matches nothing',
  async (t) => {
    const f = await proxyFixture(t);
    const path = (await f.db.query<{ path: string }>('select path from pgvpd.context_path()'))
      .rows[0]!.path;
    if (path !== 'sql') {
      t.comment('guard path: set_context verified and copied the values (test/sql/guard.test.ts)');
      return;
    }
    const client = await f.connect(f.userFor('acme'));
    t.same(await visible(client), { acme: 2, globex: 0, total: 2 });
    const token = (
      await client.query<{ token: string }>(`select current_setting('pgvpd.context') as token`)
    ).rows[0]!.token;
    // A token of the right shape for another backend, and a changed one: nothing.
    await client.query(`select set_config('pgvpd.context', $1, false)`, [`${token}x`]);
    t.equal(await tenantOf(client), null, 'a changed token: no tenant');
    t.same(await visible(client), { acme: 0, globex: 0, total: 0 }, 'and no row');
    await client.query(`select set_config('pgvpd.context', $1, false)`, [token]);
    t.equal(await tenantOf(client), 'acme', 'its own token back: acme again');
    // The record gone (the session ended by pgvpd.end_session's rule, or pruned): nothing.
    await f.db.query('delete from pgvpd_private.session_context where pid = $1', [
      await backendPid(client),
    ]);
    t.equal(await tenantOf(client), null, 'no record: no tenant');
    t.same(await visible(client), { acme: 0, globex: 0, total: 0 }, 'and no row');
  },
);

/** A server's FATAL ErrorResponse with `code` (§55.7). */
function fatal(code: string, message: string): Buffer {
  const body = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`);
  const head = Buffer.alloc(5);
  head[0] = 0x45; // 'E'
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * A TCP relay in front of PostgreSQL that records each connection it accepts (and connects it
 * upstream at once, as PostgreSQL starts a process at once). `refuseOpenedBefore(t)`: a
 * connection accepted before `t` answers its first bytes with FATAL 57P03 and closes, as a
 * server process started while the server was not accepting connections does (`close`: closes
 * without a byte, as one the server ended meanwhile).
 */
async function relay(t: TestLike, port: number, host: string) {
  interface Seen {
    acceptedAt: number;
    firstByteAt: number | undefined;
    closed: boolean;
    socket: net.Socket;
  }
  const seen: Seen[] = [];
  let refuseBefore = -Infinity;
  let refuseHow: 'fatal' | 'close' = 'fatal';
  const server = net.createServer((socket) => {
    const entry: Seen = {
      acceptedAt: performance.now(),
      firstByteAt: undefined,
      closed: false,
      socket,
    };
    seen.push(entry);
    const upstream = net.connect({ port, host });
    const end = () => {
      entry.closed = true;
      socket.destroy();
      upstream.destroy();
    };
    socket.once('data', (chunk: Buffer) => {
      entry.firstByteAt = performance.now();
      if (entry.acceptedAt < refuseBefore) {
        if (refuseHow === 'fatal')
          socket.end(fatal('57P03', 'the database system is not yet accepting connections'));
        else socket.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
      socket.pipe(upstream).pipe(socket);
    });
    socket.on('close', end);
    socket.on('error', end);
    upstream.on('close', end);
    upstream.on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of seen) s.socket.destroy();
    server.close();
  });
  const open = () => seen.filter((s) => !s.closed);
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    /** Open connections that have carried nothing: the proxy's spares. */
    idle: () => open().filter((s) => s.firstByteAt === undefined),
    /** Ends every open connection that carried nothing, as a server ending them would. */
    dropIdle: () => {
      for (const s of open()) if (s.firstByteAt === undefined) s.socket.destroy();
    },
    refuseOpenedBefore: (at: number, how: 'fatal' | 'close' = 'fatal') => {
      refuseBefore = at;
      refuseHow = how;
    },
  };
}

/** A proxy with `spares` spares of `lifetime` s, its upstream a relay in front of the database. */
async function sparesThroughRelay(t: TestLike, spares: number, lifetime: number) {
  const base = await proxyFixture(t);
  const r = await relay(t, base.db.server.port, base.db.server.host);
  const f = await proxyFixture(
    t,
    { upstream_port: r.port, upstream_spares: spares, upstream_spare_lifetime: lifetime },
    { db: base.db },
  );
  return { f, r };
}

async function until(what: () => boolean, ms = 5000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (what()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return what();
}

t.test('upstream_spares: opened ahead, taken by a client, replaced', async (t) => {
  const { f, r } = await sparesThroughRelay(t, 2, 30);
  t.ok(await until(() => r.idle().length === 2), 'two spares open, nothing sent on them');
  t.equal(r.seen.length, 2, 'and no other connection');
  const before = performance.now();
  const client = await f.connect(f.userFor('acme'));
  t.same(await visible(client), { acme: 2, globex: 0, total: 2 }, 'the client is served');
  const used = r.seen.filter((s) => s.firstByteAt !== undefined);
  t.equal(used.length, 1, 'one connection carried the client');
  t.ok(used[0]!.acceptedAt < before, 'one opened before the client came');
  t.ok(await until(() => r.idle().length === 2), 'the spare taken is replaced');
  t.equal(r.seen.length, 3);

  // A client that fails its login also took one: replaced all the same.
  t.same(
    await failure(f.connect(f.userFor('acme'), 'wrong-password')),
    {
      severity: 'FATAL',
      code: '28P01',
      message: `password authentication failed for user "${f.app.name}"`,
      hint: undefined,
    },
    'a wrong password: PostgreSQL’s 28P01',
  );
  t.ok(await until(() => r.idle().length === 2), 'its spare is replaced too');
  t.equal(r.seen.length, 4);

  // A server that ends them (a restart, its authentication_timeout): replaced, clients served.
  r.dropIdle();
  const other = await f.connect(f.userFor('globex'));
  t.same(await visible(other), { acme: 0, globex: 3, total: 3 }, 'a client right after');
  t.ok(await until(() => r.idle().length === 2), 'spares open again');

  await f.proxy.close(1);
  t.ok(await until(() => r.idle().length === 0), 'closed with the proxy');
  t.equal(r.seen.filter((s) => !s.closed).length, 0, 'every connection closed');
});

t.test('upstream_spares: a spare past its lifetime is closed and replaced', async (t) => {
  const { f, r } = await sparesThroughRelay(t, 1, 1);
  t.ok(await until(() => r.seen.length >= 3, 6000), 'replaced twice within a few lifetimes');
  t.ok(
    r.seen.every((s) => s.firstByteAt === undefined),
    'nothing sent on any of them (the server logs nothing for such a connection)',
  );
  t.ok(r.idle().length <= 1, 'at most one open at a time');
  const client = await f.connect(f.userFor('acme'));
  t.equal(await tenantOf(client), 'acme');
});

t.test('upstream_spares: a stale spare gives way to a new connection', async (t) => {
  const { f, r } = await sparesThroughRelay(t, 2, 30);
  t.ok(await until(() => r.idle().length === 2), 'two spares open');
  // Their processes were started while the server was not accepting connections (recovery,
  // start-up): they refuse with 57P03; a new connection is accepted.
  r.refuseOpenedBefore(performance.now());
  const client = await f.connect(f.userFor('acme'));
  t.same(await visible(client), { acme: 2, globex: 0, total: 2 }, 'the client is served');
  const refused = () => r.seen.filter((s) => s.firstByteAt !== undefined && s.closed).length;
  t.equal(refused(), 1, 'one spare answered 57P03 and was left');
  t.equal(r.seen.filter((s) => s.firstByteAt !== undefined).length, 2, 'then one new connection');

  // The other spare of before: the same.
  const second = await f.connect(f.userFor('globex'));
  t.same(await visible(second), { acme: 0, globex: 3, total: 3 });
  t.equal(refused(), 2, 'the second old spare answered 57P03 too');

  // Spares the server ends as the client's packet arrives (closed without a byte): the same.
  t.ok(await until(() => r.idle().length === 2), 'two new spares');
  r.refuseOpenedBefore(performance.now(), 'close');
  const third = await f.connect(f.userFor('acme'));
  t.equal(await tenantOf(third), 'acme', 'served on a new connection');
  t.equal(refused(), 3, 'after the spare closed');

  // A byte from the server on a waiting spare: it is no longer fresh, dropped and replaced.
  t.ok(await until(() => r.idle().length === 2), 'two spares again');
  const [talker] = r.idle();
  talker!.socket.write(Buffer.from('N'));
  t.ok(await until(() => talker!.closed), 'a spare that received a byte is closed');
  t.ok(await until(() => r.idle().length === 2), 'and replaced');
});

t.test('the early Parse leaves the backend idle while the issue waits', async (t) => {
  // statement_timeout of the role: a Parse without its Sync would open a transaction whose
  // statement clock runs while issue_context waits (here on a lock held for 1.2 s).
  const f = await proxyFixture(t);
  await f.db.query(`alter role ${f.app.name} set statement_timeout = '300ms'`);
  const locker = await connect(f.db.url);
  t.teardown(() => locker.end());
  await locker.query('begin');
  await locker.query('select 1 from pgvpd_private.signing_key for update');
  const connecting = f.connect(f.userFor('acme'));
  await new Promise((resolve) => setTimeout(resolve, 1200));
  await locker.query('commit');
  const client = await connecting;
  t.equal(await tenantOf(client), 'acme', 'served once the issue could go on');
});

t.test('upstream_spares: a server that cannot be reached', async (t) => {
  const base = await proxyFixture(t);
  // A port nothing listens on: a free one, closed again.
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const dead = (probe.address() as net.AddressInfo).port;
  probe.close();
  const f = await proxyFixture(t, { upstream_port: dead, upstream_spares: 2 }, { db: base.db });
  t.same(
    await failure(f.connect(f.userFor('acme'))),
    {
      severity: 'FATAL',
      code: '08006',
      message: `could not connect to upstream server 127.0.0.1:${String(dead)}: ECONNREFUSED`,
      hint: undefined,
    },
    'the client gets 08006, as without spares',
  );
});
