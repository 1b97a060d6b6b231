#!/usr/bin/env node
// A child of bench/org.mjs (its "idle" part): opens many client connections to a proxy and keeps
// them idle, so that the proxy's memory can be read while they are there. Each connection is a pg
// Client (SCRAM), opened at most PGVPD_IDLE_CONCURRENCY at a time, that runs one query,
// `select pgvpd.current_tenant_id()`, whose answer must be its user's tenant, and then stays
// connected doing nothing. Users are taken in turn from PGVPD_IDLE_USERS.
//
// Protocol with the parent: when every connection is open (or failed), one JSON line on stdout
//   {"opened":N,"failed":N,"wrongTenant":N,"seconds":S,"errors":["first few messages"]}
// then, when stdin ends, every client is ended and a second line {"closed":N} follows; then exit.
// Runs in its own process so that its sockets and the pg Clients' memory stay out of the parent
// (the parent may raise its file-descriptor limit with prlimit).
//
// Env: PGVPD_IDLE_PORT, PGVPD_IDLE_CLIENTS, PGVPD_IDLE_CONCURRENCY,
//      PGVPD_IDLE_USERS = JSON [{ "user", "database", "password", "tenant" }, …]
import pg from 'pg';

const port = Number(process.env.PGVPD_IDLE_PORT);
const total = Number(process.env.PGVPD_IDLE_CLIENTS);
const concurrency = Number(process.env.PGVPD_IDLE_CONCURRENCY ?? 16);
const users = JSON.parse(process.env.PGVPD_IDLE_USERS ?? '[]');
if (!port || !total || users.length === 0) {
  process.stderr.write('idle-clients: PGVPD_IDLE_PORT, _CLIENTS and _USERS are required\n');
  process.exit(2);
}

const clients = [];
const errors = [];
let failed = 0;
let wrongTenant = 0;
let next = 0;

async function openOne(i) {
  const u = users[i % users.length];
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: u.user,
    database: u.database,
    password: u.password,
  });
  c.on('error', (err) => {
    if (errors.length < 5) errors.push(`client ${i} later: ${err.message}`);
  });
  try {
    await c.connect();
    const r = await c.query('select pgvpd.current_tenant_id() as t');
    if (r.rows[0].t !== u.tenant) {
      wrongTenant += 1;
      if (errors.length < 5)
        errors.push(`client ${i}: tenant ${r.rows[0].t}, expected ${u.tenant}`);
    }
    clients.push(c);
  } catch (err) {
    failed += 1;
    if (errors.length < 5) errors.push(`client ${i}: ${err.message}`);
    c.end().catch(() => {});
  }
}

async function worker() {
  while (next < total) {
    const i = next++;
    await openOne(i);
    if ((i + 1) % 500 === 0) process.stderr.write(`[idle-clients] ${i + 1} of ${total}\n`);
  }
}

const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(
  JSON.stringify({ opened: clients.length, failed, wrongTenant, seconds, errors }) + '\n',
);

process.stdin.resume();
process.stdin.on('end', async () => {
  await Promise.allSettled(clients.map((c) => c.end()));
  process.stdout.write(JSON.stringify({ closed: clients.length }) + '\n');
  process.exit(0);
});
