// Lending pooled sessions to real clients through a minimal org-mode-like proxy: the proxy answers
// the client's startup itself, checks a session out, lends it, and when the loan ends releases the
// session (or discards it). What comes back must be the same backend with nothing of the last
// client in it, and only when the client left between two messages.
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { serialize } from '../../proxy/protocol/encode.js';
import t from 'tap';
import { createLogger } from '../../proxy/logger.js';
import { lend, type Loan, type LoanResult } from '../../proxy/pool/lend.js';
import { SessionPool } from '../../proxy/pool/session-pool.js';
import { loginUpstream, type PoolKey } from '../../proxy/upstream/login.js';
import { PacketReader } from '../../proxy/protocol/reader.js';
import { authenticationOk, backendKeyData } from '../../proxy/protocol/encode.js';
import { createTestDatabase, poolKeyFor, testRoles, type TestLike } from '../support/postgres.js';

function backendMessage(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'ascii');
  header.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([header, body]);
}

const parameterStatus = (name: string, value: string): Buffer =>
  backendMessage('S', Buffer.from(`${name}\0${value}\0`, 'utf8'));
const readyForQuery = backendMessage('Z', Buffer.from('I', 'ascii'));

interface LoanRecord extends LoanResult {
  pid: number;
}

interface MiniProxy {
  port: number;
  pool: SessionPool;
  /** Loans in the order clients connected, each settled once the session is back or gone. */
  loans: Promise<LoanRecord>[];
  active: Loan[];
  db: Awaited<ReturnType<typeof createTestDatabase>>;
}

async function miniProxy(t: TestLike): Promise<MiniProxy> {
  const db = await createTestDatabase(t);
  const key: PoolKey = poolKeyFor(db, testRoles.scram.user);
  const pool = new SessionPool({
    size: 1,
    checkoutTimeoutMs: 5000,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    login: (k) => loginUpstream(k, { password: testRoles.scram.password }),
    logger: createLogger('silent'),
  });
  const loans: Promise<LoanRecord>[] = [];
  const active: Loan[] = [];
  const serve = async (client: Socket): Promise<LoanRecord> => {
    client.on('error', () => undefined);
    const reader = new PacketReader(client);
    await reader.startupPacket();
    const session = await pool.checkout(key);
    client.write(
      Buffer.concat([
        authenticationOk(),
        ...[...session.parameters].map(([name, value]) => parameterStatus(name, value)),
        backendKeyData(1, 2),
        readyForQuery,
      ]),
    );
    const loan = lend(session, client, reader.release());
    active.push(loan);
    const result = await loan.ended;
    client.end();
    if (result.reusable) await pool.release(session, result.idle);
    else pool.discard(session, result.reason);
    return { ...result, pid: session.backendPid };
  };
  const server = createServer((client) => {
    loans.push(serve(client));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    server.close();
    await pool.close();
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { port: address.port, pool, loans, active, db };
}

async function pgClient(proxy: MiniProxy): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: proxy.port,
    user: 'alice',
    database: 'acme',
    password: 'unused',
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function one(client: pg.Client, sql: string): Promise<unknown> {
  const { rows } = await client.query<Record<string, unknown>>(sql);
  return Object.values(rows[0] ?? {})[0];
}

async function loan(proxy: MiniProxy, index: number): Promise<LoanRecord> {
  while (proxy.loans.length <= index) await sleep(10);
  const record = proxy.loans[index];
  if (!record) throw new Error('no loan');
  return record;
}

/** A raw client: startup, then everything up to the first ReadyForQuery. */
async function rawClient(
  proxy: MiniProxy,
  after?: Buffer,
): Promise<{ socket: Socket; reader: PacketReader }> {
  const socket = tcpConnect({ host: '127.0.0.1', port: proxy.port });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const reader = new PacketReader(socket);
  const startup = serialize.startup({ user: 'alice', database: 'acme' });
  socket.write(after ? Buffer.concat([startup, after]) : startup);
  for (;;) {
    const message = await reader.message(1024 * 1024);
    if (message.code === 0x5a) break; // ReadyForQuery
  }
  return { socket, reader };
}

async function backendAlive(proxy: MiniProxy, pid: number): Promise<boolean> {
  const { rows } = await proxy.db.query('select 1 from pg_stat_activity where pid = $1', [pid]);
  return rows.length > 0;
}

t.test(
  'a client that leaves with Terminate gives a clean session to the next client',
  async (t) => {
    const proxy = await miniProxy(t);
    const first = await pgClient(proxy);
    const pid = await one(first, 'select pg_backend_pid()');
    await first.query("set work_mem = '9MB'");
    await first.query('create temp table mine(id int)');
    await first.end();
    t.match(await loan(proxy, 0), {
      reason: 'client-terminated',
      reusable: true,
      idle: true,
      pid,
    });
    t.match(proxy.pool.stats(), { idle: 1, closed: 0 }, 'back in the pool');
    const second = await pgClient(proxy);
    t.equal(await one(second, 'select pg_backend_pid()'), pid, 'the same backend');
    t.equal(await one(second, 'show work_mem'), '4MB', 'without the last client settings');
    t.equal(await one(second, "select to_regclass('pg_temp.mine')::text"), null, 'or temp tables');
    await second.end();
    await loan(proxy, 1);
  },
);

t.test(
  'a client that closes between messages without Terminate gives its session back',
  async (t) => {
    const proxy = await miniProxy(t);
    const raw = await rawClient(proxy);
    raw.socket.write(serialize.query('select 1'));
    for (;;) {
      const message = await raw.reader.message(1024 * 1024);
      if (message.code === 0x5a) break;
    }
    raw.socket.destroy();
    const record = await loan(proxy, 0);
    t.match(record, { reason: 'client-closed', reusable: true });
    const next = await pgClient(proxy);
    t.equal(await one(next, 'select pg_backend_pid()'), record.pid, 'the same backend');
    await next.end();
  },
);

t.test(
  'a client that leaves inside a transaction: not idle, and the reset rolls it back',
  async (t) => {
    const proxy = await miniProxy(t);
    await proxy.db.query('create table left_open(id int)');
    await proxy.db.query(`grant insert, select on left_open to ${testRoles.scram.user}`);
    const first = await pgClient(proxy);
    const pid = await one(first, 'select pg_backend_pid()');
    await first.query('begin');
    await first.query('insert into left_open values (1)');
    await first.end();
    t.match(await loan(proxy, 0), { reason: 'client-terminated', reusable: true, idle: false });
    const second = await pgClient(proxy);
    t.equal(await one(second, 'select pg_backend_pid()'), pid, 'the same backend, reset');
    t.equal(await one(second, 'select count(*)::int from left_open'), 0, 'the insert rolled back');
    await second.end();
    await loan(proxy, 1);
    // Raw, so that the client reads its ReadyForQuery before it leaves (pg settles a failed
    // query at its ErrorResponse; a ReadyForQuery still on its way at the release would make the
    // reset refuse the session, rightly, and the test would measure that instead).
    const raw = await rawClient(proxy);
    raw.socket.write(serialize.query('begin; select 1/0'));
    let last = await raw.reader.message(1024 * 1024);
    while (last.code !== 0x5a) last = await raw.reader.message(1024 * 1024);
    t.equal(String.fromCharCode(last.body[0] ?? 0), 'E', 'the transaction is aborted');
    raw.socket.end(Buffer.from([0x58, 0, 0, 0, 4])); // Terminate
    t.match(await loan(proxy, 2), { reusable: true, idle: false }, 'aborted: not idle either');
    const third = await pgClient(proxy);
    t.equal(await one(third, 'select pg_backend_pid()'), pid, 'and the backend is reused again');
    await third.end();
    await loan(proxy, 3);
  },
);

t.test(
  "answers a client queued before leaving are not taken for the reset's: the backend is ended",
  async (t) => {
    // The client waits for idle (so the release leaves ROLLBACK out), then queues a statement
    // answering with the reset's very command tags, a slow one and a BEGIN, and leaves at once. Read as the
    // reset's answer, the forgery would send the backend back with the client's transaction still
    // to come; the reset's own row (a nonce no client sees) is missing from it, so it is ended.
    const proxy = await miniProxy(t);
    const raw = await rawClient(proxy);
    raw.socket.write(serialize.query('select 1'));
    let last = await raw.reader.message(1024 * 1024);
    while (last.code !== 0x5a) last = await raw.reader.message(1024 * 1024);
    const forged =
      "CLOSE ALL; SET application_name = 'x'; RESET application_name; DEALLOCATE ALL; " +
      "UNLISTEN *; SELECT 1; DISCARD TEMP; DISCARD SEQUENCES; SELECT 'not the nonce'";
    raw.socket.end(
      Buffer.concat([
        serialize.query(forged),
        // Answered only after the release has read its "reset": nothing more to see by then.
        serialize.query('SELECT pg_sleep(0.5)'),
        serialize.query('BEGIN'),
        Buffer.from([0x58, 0, 0, 0, 4]), // Terminate
      ]),
    );
    const record = await loan(proxy, 0);
    t.match(record, { reason: 'client-terminated', reusable: true, idle: true }, 'left "idle"');
    let alive = await backendAlive(proxy, record.pid);
    for (let tries = 0; alive && tries < 150; tries++) {
      await sleep(20);
      alive = await backendAlive(proxy, record.pid);
    }
    t.equal(alive, false, 'the backend is ended, not given back');
    t.match(proxy.pool.stats(), { idle: 0, closed: 1 });
    const next = await pgClient(proxy);
    t.not(await one(next, 'select pg_backend_pid()'), record.pid, 'the next client gets another');
    t.equal(await one(next, 'select now() = statement_timestamp()'), true, 'outside a transaction');
    await next.end();
  },
);

t.test('a client that vanishes mid-message does not give its session back', async (t) => {
  const proxy = await miniProxy(t);
  const raw = await rawClient(proxy);
  // A Query header announcing 100 bytes, and only 3 of them.
  const partial = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 104]), Buffer.from('sel')]);
  raw.socket.write(partial);
  await sleep(50);
  raw.socket.destroy();
  const record = await loan(proxy, 0);
  t.match(record, { reason: 'client-closed', reusable: false });
  t.match(proxy.pool.stats(), { idle: 0, closed: 1 }, 'discarded');
  const next = await pgClient(proxy);
  t.not(await one(next, 'select pg_backend_pid()'), record.pid, 'the next client gets another');
  await next.end();
  let alive = await backendAlive(proxy, record.pid);
  for (let tries = 0; alive && tries < 100; tries++) {
    await sleep(20);
    alive = await backendAlive(proxy, record.pid);
  }
  t.equal(alive, false, 'the old backend is gone');
});

t.test('a backend that goes away ends the loan and the client hears why', async (t) => {
  const proxy = await miniProxy(t);
  const client = await pgClient(proxy);
  const pid = await one(client, 'select pg_backend_pid()');
  const heard = new Promise((resolve) => client.once('error', resolve));
  await proxy.db.query('select pg_terminate_backend($1)', [pid]);
  t.match(await loan(proxy, 0), { reason: 'upstream-closed', reusable: false, pid });
  t.match(await heard, { code: '57P01' }, "the backend's FATAL reaches the client");
  const next = await pgClient(proxy);
  t.not(await one(next, 'select pg_backend_pid()'), pid);
  await next.end();
});

t.test('bytes the client sent right behind its startup packet go first', async (t) => {
  const proxy = await miniProxy(t);
  const raw = await rawClient(proxy, serialize.query("select 'early'"));
  let row: string | undefined;
  for (;;) {
    const message = await raw.reader.message(1024 * 1024);
    if (message.code === 0x44) row = message.body.toString('utf8', 6); // DataRow: 1 column
    if (message.code === 0x5a) break;
  }
  t.equal(row, 'early');
  raw.socket.end(Buffer.from([0x58, 0, 0, 0, 4]));
  t.match(await loan(proxy, 0), { reason: 'client-terminated', reusable: true });
});

t.test('large results and parameters flow both ways', async (t) => {
  const proxy = await miniProxy(t);
  const client = await pgClient(proxy);
  const big = 'x'.repeat(8 * 1024 * 1024);
  const { rows } = await client.query<{ n: number; echo: string }>(
    'select length($1::text) as n, repeat($1::text, 2) as echo',
    [big],
  );
  t.equal(rows[0]?.n, big.length);
  t.equal(rows[0]?.echo.length, 2 * big.length);
  await client.end();
  t.match(await loan(proxy, 0), { reason: 'client-terminated', reusable: true });
});

t.test('stop ends a loan from the proxy side', async (t) => {
  const proxy = await miniProxy(t);
  const client = await pgClient(proxy);
  await client.query('select 1');
  proxy.active[0]?.stop();
  t.match(await loan(proxy, 0), { reason: 'stopped', reusable: true });
  t.match(
    proxy.pool.stats(),
    { idle: 1 },
    'an idle client between messages leaves a clean session',
  );
  await client.end().catch(() => undefined);
});
