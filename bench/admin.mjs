// What the HTTP control plane costs the data plane, and how fast it answers (issue 13).
//
// One throwaway PostgreSQL 15 cluster (scram-sha-256 for TCP) with sql/setup.sql, pgbench -i -s 10,
// an app role `bench_app` (tenant acme through the proxy) and a control role `bench_proxy`, member
// of pgvpd_proxy and pgvpd_api (it is also the admin server's login). Two app-mode proxies of this
// checkout run side by side:
//   pgvpd        no admin server;
//   pgvpd-admin  the same with --admin-port, and a scraper fetching /metrics (metrics token) every
//                second for the whole run.
//
//   1. Throughput: pgbench -n -S -c 8 -j 2 -T $PGVPD_BENCH_SECONDS through each, simple protocol,
//      for $PGVPD_BENCH_ROUNDS rounds, the order alternating each round. Judged: the median of the
//      per-round ratios pgvpd-admin/pgvpd, target ≥ 0.98. CPU per transaction of each proxy
//      process is printed too (unthrottled, so it follows each arm's TPS).
//   1b. The same rounds at one fixed rate (pgbench -R, 0.5 × the lowest TPS of section 1, the
//      admin arm still scraped): CPU per transaction of each proxy process (on-CPU time of all its
//      threads, /proc/<pid>/task/*/schedstat) and their difference, median of the rounds: what
//      the control plane costs per transaction, less sensitive to the machine's load than TPS.
//   2. Latency with 500 client sessions open through pgvpd-admin (each has run select 1):
//      GET /api/v1/status (operator token) and GET /metrics (metrics token), 500 sequential
//      requests each after 50 of warm-up, over one keep-alive connection (Node's fetch); p50, p99
//      (pgvpd-admin runs with --rate-limit-api 100000 so that these are not answered 429).
//      Target p99 < 50 ms. GET /healthz (no database, no token) is measured the same way, as the
//      floor of an HTTP round trip.
//   3. The token check's cost, on the SQL side: in one session of the API login, batches of 2,000
//      `select pgvpd.api_authorize($1, 'operator')` against 2,000 `select $1::text` (both prepared),
//      5 interleaved batches; the median difference per call, µs.
//
// Usage: node bench/admin.mjs  (env: PGVPD_BENCH_SECONDS (10), PGVPD_BENCH_ROUNDS (7),
//                               PGVPD_BENCH_SESSIONS (500), PGVPD_PG_BIN, PGVPD_PGBENCH)
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createBenchDatabase } from './lib/pgbench.mjs';
import { cpuNs, startServer, stopServers } from './lib/servers.mjs';
import {
  PGBENCH,
  cleanup,
  connect,
  freePort,
  log,
  median,
  percentile,
  positiveInt,
  run,
  sleep,
  startCluster,
  withDatabase,
} from './lib/cluster.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 10);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 7);
const SESSIONS = positiveInt(process.env.PGVPD_BENCH_SESSIONS, 500);
const REQUESTS = 500;
const REQUEST_WARMUP = 50;
const BATCH = 2000;
const BATCHES = 5;
const DATABASE = 'pgvpd_bench';
const APP_ROLE = 'bench_app';
const PROXY_ROLE = 'bench_proxy';
const TENANT = 'acme';
const TPS_TARGET = 0.98;
const P99_TARGET_MS = 50;

async function setupDatabase(adminUrl) {
  const dbUrl = await createBenchDatabase(adminUrl, DATABASE, 10);
  const appPassword = randomBytes(12).toString('hex');
  const proxyPassword = randomBytes(12).toString('hex');
  const db = await connect(dbUrl);
  await db.query(`
    create role ${APP_ROLE} login nosuperuser nobypassrls password '${appPassword}';
    select pgvpd.add_app_role('${APP_ROLE}');
    create role ${PROXY_ROLE} login nosuperuser nobypassrls password '${proxyPassword}'
      in role pgvpd_proxy, pgvpd_api;
    grant connect on database ${DATABASE} to ${APP_ROLE}, ${PROXY_ROLE};
    grant select on pgbench_accounts, pgbench_branches, pgbench_tellers to ${APP_ROLE};
  `);
  const operator = (
    await db.query(`select token from pgvpd.token_create('operator', null, 'bench')`)
  ).rows[0].token;
  const metrics = (await db.query(`select token from pgvpd.token_create('metrics', null, 'bench')`))
    .rows[0].token;
  await db.query('vacuum analyze');
  return { db, dbUrl, appPassword, proxyPassword, tokens: { operator, metrics } };
}

async function startPgvpd(name, pgPort, proxyPassword, withAdmin) {
  const command = join(ROOT, 'dist/cli/main.js');
  if (!existsSync(command)) throw new Error(`${command} does not exist (run npm run build)`);
  const port = await freePort();
  const adminPort = withAdmin ? await freePort() : null;
  const args = [
    command,
    'serve',
    '--port',
    String(port),
    '--upstream-host',
    '127.0.0.1',
    '--upstream-port',
    String(pgPort),
    '--control-url',
    `postgres://${PROXY_ROLE}@127.0.0.1:${pgPort}/${DATABASE}`,
    '--log-level',
    'warn',
    // The latency section sends 1,100 authenticated requests in well under a minute.
    ...(withAdmin ? ['--admin-port', String(adminPort), '--rate-limit-api', '100000'] : []),
  ];
  const server = await startServer(name, process.execPath, args, port, {
    cwd: ROOT,
    env: { PGPASSWORD: proxyPassword },
  });
  return { name, port, adminPort, pid: server.pid };
}

async function check(target, password) {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: target.port,
    user: `${APP_ROLE}.${TENANT}`,
    database: DATABASE,
    password,
  });
  await c.connect();
  const row = (
    await c.query(`select current_user::text as role, pgvpd.current_tenant_id() as tenant`)
  ).rows[0];
  await c.end();
  if (row.role !== APP_ROLE || row.tenant !== TENANT) {
    throw new Error(`${target.name}: expected ${APP_ROLE}/${TENANT}, got ${JSON.stringify(row)}`);
  }
}

async function pgbench(target, password, seconds, rate = null) {
  const before = cpuNs(target.pid);
  const { stdout } = await run(
    PGBENCH,
    [
      '-n',
      '-S',
      '-c',
      '8',
      '-j',
      '2',
      '-T',
      String(seconds),
      ...(rate === null ? [] : ['-R', String(rate)]),
      '-h',
      '127.0.0.1',
      '-p',
      String(target.port),
      '-U',
      `${APP_ROLE}.${TENANT}`,
      DATABASE,
    ],
    { env: { PGPASSWORD: password } },
  );
  const after = cpuNs(target.pid);
  const tps = stdout.match(/^tps = ([\d.]+) \(without initial connection time\)/m);
  const tx = stdout.match(/^number of transactions actually processed: (\d+)/m);
  if (!tps || !tx) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  return { tps: Number(tps[1]), cpuUsPerTx: (after - before) / 1e3 / Number(tx[1]) };
}

/** Fetches `path` every second until stopped; counts answers by status. */
function scraper(adminPort, path, token) {
  const seen = {};
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      const response = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await response.text();
      seen[response.status] = (seen[response.status] ?? 0) + 1;
      await sleep(Math.max(0, 1000 - (Date.now() - started)));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return seen;
    },
  };
}

async function latencies(adminPort, path, token) {
  const times = [];
  for (let i = 0; i < REQUEST_WARMUP + REQUESTS; i++) {
    const started = process.hrtime.bigint();
    const response = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    await response.text();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (response.status !== 200) throw new Error(`${path}: HTTP ${response.status}`);
    if (i >= REQUEST_WARMUP) times.push(ms);
  }
  return { p50: percentile(times, 50), p99: percentile(times, 99), max: Math.max(...times) };
}

async function tokenCheckCost(dbUrl, proxyPassword, token) {
  const c = await connect(withDatabase(dbUrl, DATABASE, PROXY_ROLE), proxyPassword);
  const batch = async (sql) => {
    const started = process.hrtime.bigint();
    for (let i = 0; i < BATCH; i++)
      await c.query({ name: sql.slice(0, 40), text: sql, values: [token] });
    return Number(process.hrtime.bigint() - started) / 1e3 / BATCH;
  };
  const diffs = [];
  const authorize = [];
  const plain = [];
  await batch(`select pgvpd.api_authorize($1, 'operator')`);
  await batch('select $1::text');
  for (let i = 0; i < BATCHES; i++) {
    const a = await batch(`select pgvpd.api_authorize($1, 'operator')`);
    const p = await batch('select $1::text');
    authorize.push(a);
    plain.push(p);
    diffs.push(a - p);
  }
  await c.end();
  return {
    authorizeUs: median(authorize),
    plainUs: median(plain),
    differenceUs: median(diffs),
    diffs,
  };
}

async function main() {
  const meta = { startedAt: new Date().toISOString(), loadavgAtStart: loadavg() };
  const cluster = await startCluster({
    authHost: 'scram-sha-256',
    conf: ['max_connections = 700'],
  });
  const setup = await setupDatabase(cluster.adminUrl);
  const plain = await startPgvpd('pgvpd', cluster.port, setup.proxyPassword, false);
  const admin = await startPgvpd('pgvpd-admin', cluster.port, setup.proxyPassword, true);
  for (const target of [plain, admin]) await check(target, setup.appPassword);
  const health = await fetch(`http://127.0.0.1:${admin.adminPort}/metrics`, {
    headers: { authorization: `Bearer ${setup.tokens.metrics}` },
  });
  if (health.status !== 200) throw new Error(`/metrics answered ${health.status}`);
  await health.text();

  // 1. Throughput.
  log('warm-up');
  for (const target of [plain, admin]) await pgbench(target, setup.appPassword, 2);
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? [plain, admin] : [admin, plain];
    const result = {};
    for (const target of order) {
      const scrape =
        target === admin ? scraper(admin.adminPort, '/metrics', setup.tokens.metrics) : null;
      result[target.name] = await pgbench(target, setup.appPassword, SECONDS);
      if (scrape) result.scrapes = await scrape.stop();
      log(
        `round ${round + 1}/${ROUNDS} ${target.name.padEnd(11)} ${result[target.name].tps.toFixed(0)} tps`,
      );
    }
    result.ratio = result['pgvpd-admin'].tps / result.pgvpd.tps;
    rounds.push(result);
  }
  const ratio = median(rounds.map((r) => r.ratio));

  // 1b. CPU per transaction at one fixed rate for both (steadier than unthrottled TPS here).
  const rate =
    Math.floor(
      (0.5 * Math.min(...rounds.flatMap((r) => [r.pgvpd.tps, r['pgvpd-admin'].tps]))) / 100,
    ) * 100;
  const fixed = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? [plain, admin] : [admin, plain];
    const result = {};
    for (const target of order) {
      const scrape =
        target === admin ? scraper(admin.adminPort, '/metrics', setup.tokens.metrics) : null;
      result[target.name] = await pgbench(target, setup.appPassword, SECONDS, rate);
      if (scrape) await scrape.stop();
      log(
        `fixed rate round ${round + 1}/${ROUNDS} ${target.name.padEnd(11)} ${result[target.name].cpuUsPerTx.toFixed(1)} µs/tx at -R ${rate}`,
      );
    }
    result.overUs = result['pgvpd-admin'].cpuUsPerTx - result.pgvpd.cpuUsPerTx;
    fixed.push(result);
  }
  const cpuOverUs = median(fixed.map((r) => r.overUs));

  // 2. Latency with SESSIONS sessions open.
  log(`opening ${SESSIONS} sessions through pgvpd-admin`);
  const clients = [];
  for (let i = 0; i < SESSIONS; i++) {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: admin.port,
      user: `${APP_ROLE}.${TENANT}`,
      database: DATABASE,
      password: setup.appPassword,
    });
    c.on('error', () => {});
    await c.connect();
    await c.query('select 1');
    clients.push(c);
  }
  const status = await fetch(`http://127.0.0.1:${admin.adminPort}/api/v1/status`, {
    headers: { authorization: `Bearer ${setup.tokens.operator}` },
  });
  const statusBody = await status.json();
  const latency = {
    healthz: await latencies(admin.adminPort, '/healthz', null),
    status: await latencies(admin.adminPort, '/api/v1/status', setup.tokens.operator),
    metrics: await latencies(admin.adminPort, '/metrics', setup.tokens.metrics),
  };
  await Promise.all(clients.map((c) => c.end().catch(() => {})));

  // 3. Token check cost.
  const token = await tokenCheckCost(setup.dbUrl, setup.proxyPassword, setup.tokens.operator);
  meta.loadavgAtEnd = loadavg();

  const out = [];
  out.push(
    '',
    `bench:admin — ${ROUNDS} rounds × ${SECONDS} s, load average ${meta.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} at start, ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')} at end`,
    '',
    '1. Throughput, pgbench -S simple, TPS (CPU µs/tx of the proxy process)',
  );
  rounds.forEach((r, i) =>
    out.push(
      `  round ${i + 1}: pgvpd ${r.pgvpd.tps.toFixed(0)} (${r.pgvpd.cpuUsPerTx.toFixed(1)})  pgvpd-admin ${r['pgvpd-admin'].tps.toFixed(0)} (${r['pgvpd-admin'].cpuUsPerTx.toFixed(1)})  ratio ${r.ratio.toFixed(3)}×  scrapes ${JSON.stringify(r.scrapes)}`,
    ),
  );
  out.push(
    `  median of the rounds' ratios pgvpd-admin/pgvpd: ${ratio.toFixed(3)}× (target ≥ ${TPS_TARGET}) ${ratio >= TPS_TARGET ? 'pass' : 'FAIL'}`,
    '',
    `1b. Proxy CPU per transaction at -R ${rate} (both arms, the admin one scraped every second), µs/tx`,
    ...fixed.map(
      (r, i) =>
        `  round ${i + 1}: pgvpd ${r.pgvpd.cpuUsPerTx.toFixed(1)} (${r.pgvpd.tps.toFixed(0)} tps)  pgvpd-admin ${r['pgvpd-admin'].cpuUsPerTx.toFixed(1)} (${r['pgvpd-admin'].tps.toFixed(0)} tps)  difference ${r.overUs.toFixed(1)}`,
    ),
    `  median difference pgvpd-admin − pgvpd: ${cpuOverUs.toFixed(1)} µs/tx (a reference, not judged)`,
    '',
    `2. Latency with ${SESSIONS} sessions open (status reports ${statusBody?.sessions?.total ?? JSON.stringify(statusBody?.sessions)} sessions), ms: p50 / p99 / max`,
  );
  for (const [name, l] of Object.entries(latency)) {
    const judged =
      name === 'healthz'
        ? ''
        : ` (p99 target < ${P99_TARGET_MS}) ${l.p99 < P99_TARGET_MS ? 'pass' : 'FAIL'}`;
    out.push(
      `  ${name.padEnd(8)} ${l.p50.toFixed(2)} / ${l.p99.toFixed(2)} / ${l.max.toFixed(2)}${judged}`,
    );
  }
  out.push(
    '',
    `3. Token check (SQL, one session, ${BATCHES} batches of ${BATCH}): api_authorize ${token.authorizeUs.toFixed(1)} µs, select $1::text ${token.plainUs.toFixed(1)} µs, difference ${token.differenceUs.toFixed(1)} µs per call (median)`,
  );
  console.log(out.join('\n'));
  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-'));
  const file = join(dir, 'admin.json');
  writeFileSync(
    file,
    JSON.stringify(
      { meta, rounds, ratio, rate, fixed, cpuOverUs, latency, token, status: statusBody },
      null,
      2,
    ),
  );
  console.log(`\nresults: ${file}`);
  await setup.db.end();
}

main()
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => {
    stopServers();
    cleanup();
  });
