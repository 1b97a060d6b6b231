#!/usr/bin/env node
// Benchmark: the pgvpd proxy in org mode (users authenticated by the proxy against the catalog,
// pooled connect_as sessions) against direct PostgreSQL, PgBouncer and the app-mode proxy, in
// session and in transaction pooling.
//
// Against ONE throwaway PostgreSQL 15 cluster in ONE run (the machine is shared and noisy, so only
// ratios from the same run mean much); every TCP connection authenticates with scram-sha-256
// (pg_hba), the password in PGPASSWORD or the pg Client's options. The cluster has
// track_functions = 'pl' (pgvpd.switch_context is counted in pg_stat_user_functions). Two orgs,
// bench-org (user alice) and bench-org2 (user bob), both of shared placement (target database
// pgvpd_bench) and both with connect_as role bench_org, so that their clients share one pool per
// proxy. Ways in:
//   direct      PostgreSQL itself, as the connect_as role bench_org
//   pgbouncer   PgBouncer (/usr/sbin/pgbouncer), pool_mode = session, default_pool_size = 20,
//               SCRAM with bench_org's verifier from pg_authid in its auth file; user bench_org
//   org         the pgvpd proxy in org mode (PGVPD_ORG_COMMAND below), session pooling: user
//               alice of bench-org (org-bob: bob of bench-org2, same proxy), SCRAM against the
//               catalog's verifier, then a pooled session of bench_org readied for the user
//               (pool/switch.ts: one statement, nothing for the same owner); pool_size 20
//   app         the pgvpd proxy in app mode (PGVPD_APP_COMMAND), user bench_app.acme, as in
//               bench/proxy.mjs: authentication relayed, one backend per client connection
//   nocontext   a reference: the org-mode proxy as built, with its checkout's context step taken
//               out (bench/lib/org-without-context.mjs): no switch_context at checkout and no
//               owner, so no restore after the release's reset either; no tenant
//   floor       a reference, not a proxy (bench/lib/node-floor.mjs): a Node.js server that
//               authenticates alice with the same SCRAM code and verifier as org mode and answers
//               every query with a canned row, with no upstream, pool or context at all
//   pgbouncer-tx  PgBouncer in transaction mode, default_pool_size = 16, ONE user (bench_org) and
//               ONE database, so that all its clients share one pool of 16 server connections
//               (bench/lib/servers.mjs startPgbouncer, poolMode transaction)
//   tx-alice, tx-bob  a second org-mode proxy with --pool-mode transaction --pool-size 16 (one
//               pool of 16 backends for both orgs) and an admin port (GET /metrics, metrics token)
//   idle        a third org-mode proxy, transaction mode, pool_size 16, fresh, for the idle part
//
// Parts, chosen with PGVPD_BENCH_PARTS (comma-separated; default all: churn,steady,connect,tx,idle):
//   churn    1. Connection churn, one user: pgbench -n -S -C -c 8 -j 2 -T $PGVPD_BENCH_SECONDS
//               (default 15), a new SCRAM connection per transaction, through direct, pgbouncer,
//               org, nocontext, floor and app. Targets: org ≥ 1.6 × direct and ≥ 0.90 ×
//               pgbouncer; org's proxy + PostgreSQL CPU per churned connection ≤ 1.2 ms.
//            Two orgs at once: two pgbench processes started together, -C -c 4 -j 1 each (the
//               same 8 clients and 2 threads as one user), alice and bob through org against two
//               bench_org processes through pgbouncer; their TPS summed. Target org ≥ 0.80 ×
//               pgbouncer.
//   steady   2. Steady state: pgbench -n -S -c 8 -j 2 (no -C) through org (its pooled session
//               lent to each client) and app (a passthrough pipe after the handshake). Target: org
//               ≥ 0.95 × app.
//   tx       4. Transaction pooling: two pgbench processes of -S -c 32 -j 1 started together (64
//               clients over 16 backends): tx-alice and tx-bob (org), the same with -M prepared
//               (org-prepared), tx-alice twice (org-one-owner: no owner changes, the reference of
//               the switch's cost) and pgbouncer-tx twice (pgbouncer: 64 clients of one user and
//               database, one pool of 16). Targets: org ≥ 0.75 × pgbouncer, org-prepared ≥ 0.90 ×
//               org. PgBouncer 1.18 has no prepared statements in transaction mode, so there is
//               no pgbouncer -M prepared run. Reported: switch_context calls per second and their
//               backend time per call (pg_stat_user_functions total_time / calls), owner switches
//               per second from the proxy's pgvpd_pool_owner_switches_total when it exports it,
//               and the whole cost of one switch: (proxy + PostgreSQL CPU per transaction of org
//               − the same of org-one-owner) / (switch_context calls per transaction of org − of
//               org-one-owner). Each process's own TPS is shown beside the sum (with its
//               connections' opening time), so that an uneven split between the orgs shows.
//               Then one switch on one backend with nothing else running
//               (bench/lib/switch-cost.mjs): backend CPU and round trip of select 1, a switch, the
//               proxy's owner-change reset + a switch, and that reset without DISCARD PLANS; the
//               proxy's CPU to mint a grant.
//   connect  3. SCRAM connect latency: a pg Client connects (SCRAM) and ends, one at a time, the
//               targets direct, pgbouncer and org interleaved and rotated, $PGVPD_BENCH_CONNECTS
//               iterations (default 300) after 30 of warm-up: p50 and p99 of the connect (to
//               ReadyForQuery) and of connect + close.
//   idle     5. $PGVPD_BENCH_IDLE_CLIENTS (default 2,000) clients of both orgs on the idle proxy,
//               16 logins at a time, each authenticated with one query (its tenant checked), then
//               idle (bench/lib/org-idle.mjs, bench/lib/idle-clients.mjs): the proxy's VmRSS.
//               Target ≤ 300 MB. $PGVPD_BENCH_IDLE_CYCLES (default 1) repeats it on the same
//               proxy (does its memory come back, or grow?). The proxy and the clients' process
//               get enough open files (prlimit up to the hard limit when the soft one is too low).
//   churn, steady and tx run in $PGVPD_BENCH_ROUNDS interleaved rounds (default 3, the runs' order
//   rotated by one each round) after a 2 s warm-up of each run; medians.
//   For each pgbench run also: the proxy's CPU (utime+stime of its process) per transaction (with
//   -C: per churned connection), PostgreSQL's CPU per transaction (the whole cluster: the
//   postmaster's own and its reaped children's times plus its live children's, bench/lib/pg-cpu.mjs,
//   read 1.1 s after pgbench ends) and the backends PostgreSQL started meanwhile
//   (pg_stat_database.sessions), and pgbench's own CPU per transaction (its SCRAM under -C: the
//   share of the two cores it leaves to the servers; reaped children's times of this process).
//   Runs whose switches are counted (two-org churn through org, all pgvpd transaction runs) wait
//   11 s before and after for pg_stat_user_functions to be complete (bench/lib/switch-stats.mjs).
//
// Needs `npx tsc -p tsconfig.json` (dist/cli/main.js, dist/proxy/auth/scram-verifier.js). Before
// timing it checks every target: the session's role, pgvpd.current_tenant_id() (the org's id
// through org and tx-*, acme through app, none otherwise) and the 10 pgbench branches.
//
// Usage: npm run bench:org  (env: PGVPD_BENCH_PARTS, PGVPD_BENCH_SECONDS, PGVPD_BENCH_ROUNDS,
//                            PGVPD_BENCH_CONNECTS, PGVPD_BENCH_IDLE_CLIENTS, PGVPD_BENCH_IDLE_CYCLES,
//                            PGVPD_BENCH_BEFORE,
//                            PGVPD_PG_BIN, PGVPD_PGBENCH, PGVPD_PGBOUNCER)
// Before/after in one run: PGVPD_BENCH_BEFORE=<tree> (another checkout with its dist/ built, e.g. a
// worktree of an earlier commit) adds org-before and app-before, the same commands run from that
// tree, to the one-user churn and steady-state runs; ratios org/org-before, app/app-before and the
// before arms' own ratios are printed.
// For manual runs: PGVPD_BENCH_HOLD=1 sets everything up, prints a pgbench line per target and
// waits for Ctrl-C; PGVPD_BENCH_NODE_ARGS adds node options to the proxies and the floor (e.g. --cpu-prof).
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
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
  tempDir,
} from './lib/cluster.mjs';
import { measureIdleClients, fdLimitPrefix } from './lib/org-idle.mjs';
import { clusterCpuTicks, postmasterPid } from './lib/pg-cpu.mjs';
import { backendsStarted, createBenchDatabase, parsePgbench } from './lib/pgbench.mjs';
import { commitOf, fmt, medianOf, table, verdict } from './lib/report.mjs';
import { measureSwitchCost } from './lib/switch-cost.mjs';
import {
  CLK_TCK,
  cpuTimes,
  reapedChildrenTicks,
  startFloor,
  startPgbouncer,
  startServer,
  stopServers,
} from './lib/servers.mjs';
import {
  STATS_SETTLE_MS,
  poolMetrics,
  poolMetricsDelta,
  switchContextDelta,
  switchContextStats,
} from './lib/switch-stats.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ALL_PARTS = ['churn', 'steady', 'connect', 'tx', 'idle'];
const PARTS = new Set(
  (process.env.PGVPD_BENCH_PARTS || ALL_PARTS.join(','))
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean),
);
for (const p of PARTS) {
  if (!ALL_PARTS.includes(p)) {
    throw new Error(`PGVPD_BENCH_PARTS: unknown part ${p} (parts: ${ALL_PARTS.join(', ')})`);
  }
}
const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 15);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 3);
const CONNECTS = positiveInt(process.env.PGVPD_BENCH_CONNECTS, 300);
const IDLE_CLIENTS = positiveInt(process.env.PGVPD_BENCH_IDLE_CLIENTS, 2000);
// Times the idle clients are opened and closed again on the same proxy: more than one shows
// whether its memory comes back or grows from cycle to cycle.
const IDLE_CYCLES = positiveInt(process.env.PGVPD_BENCH_IDLE_CYCLES, 1);
const IDLE_CONCURRENCY = 16;
const CONNECT_WARMUP = 30;
const WARMUP_SECONDS = 2;
// One pgbench process (churn, steady).
const CLIENTS = 8;
const THREADS = 2;
// Each of the two pgbench processes of the two-org churn: together the same 8 clients, 2 threads.
const CHURN2_CLIENTS = 4;
const CHURN2_THREADS = 1;
// Each of the two pgbench processes of the transaction runs: 64 clients together.
const TX_CLIENTS = 32;
const TX_THREADS = 1;
const SCALE = 10;
const DATABASE = 'pgvpd_bench';
const APP_ROLE = 'bench_app';
const PROXY_ROLE = 'bench_proxy';
const ORG_ROLE = 'bench_org';
const ORG_DATABASE = 'bench-org';
const ORG_USER = 'alice';
const ORG2_DATABASE = 'bench-org2';
const ORG2_USER = 'bob';
const TENANT = 'acme';
const POOL_SIZE = 20;
const TX_POOL_SIZE = 16;
const BEFORE = process.env.PGVPD_BENCH_BEFORE || null;

// The proxies' command lines (run with this Node, cwd = the repository); {port}, {pgport},
// {controlUrl} (postgres://bench_proxy@127.0.0.1:<pgport>/pgvpd_bench), {passfile} and
// {adminPort} are filled in; the control role's password is in the child's PGPASSWORD.
const COMMON = [
  'dist/cli/main.js',
  'serve',
  '--port',
  '{port}',
  '--upstream-host',
  '127.0.0.1',
  '--upstream-port',
  '{pgport}',
  '--control-url',
  '{controlUrl}',
  '--log-level',
  'warn',
];
const PGVPD_APP_COMMAND = COMMON;
const PGVPD_ORG_COMMAND = [
  ...COMMON,
  '--mode',
  'org',
  '--pool-size',
  String(POOL_SIZE),
  '--connect-as-passfile',
  '{passfile}',
];
const PGVPD_NOCONTEXT_COMMAND = [
  'bench/lib/org-without-context.mjs',
  ...PGVPD_ORG_COMMAND.slice(1),
];
const PGVPD_TX_COMMAND = [
  ...COMMON,
  '--mode',
  'org',
  '--pool-mode',
  'transaction',
  '--pool-size',
  String(TX_POOL_SIZE),
  '--connect-as-passfile',
  '{passfile}',
  '--admin-port',
  '{adminPort}',
];
// The idle part's proxy: transaction mode, no admin port.
const PGVPD_IDLE_COMMAND = PGVPD_TX_COMMAND.slice(0, -2);

const CHURN_OVER_DIRECT = 1.6;
const CHURN_OVER_PGBOUNCER = 0.9;
const CHURN2_OVER_PGBOUNCER = 0.8;
const CHURN_CPU_US = 1200;
const STEADY_OVER_APP = 0.95;
const TX_OVER_PGBOUNCER = 0.75;
const TX_PREPARED_OVER_SIMPLE = 0.9;
const IDLE_RSS_MB = 300;

// ---------------------------------------------------------------------------------------------
// Setup

async function setupDatabase(adminUrl) {
  const dbUrl = await createBenchDatabase(adminUrl, DATABASE, SCALE);

  const { makeVerifier } = await import(
    pathToFileURL(join(ROOT, 'dist/proxy/auth/scram-verifier.js')).href
  );
  const passwords = {
    app: randomBytes(12).toString('hex'),
    proxy: randomBytes(12).toString('hex'),
    org: randomBytes(12).toString('hex'),
    alice: randomBytes(12).toString('hex'),
    bob: randomBytes(12).toString('hex'),
  };
  const db = await connect(dbUrl);
  const version = (await db.query('show server_version')).rows[0].server_version;
  // bench_proxy is also pgvpd_api: the transaction proxy's admin port serves /metrics.
  await db.query(`
    create role ${APP_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole
      password '${passwords.app}';
    select pgvpd.add_app_role('${APP_ROLE}');
    create role ${PROXY_ROLE} login nosuperuser nobypassrls password '${passwords.proxy}'
      in role pgvpd_proxy, pgvpd_api;
    create role ${ORG_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole noinherit
      password '${passwords.org}';
    grant connect on database ${DATABASE} to ${APP_ROLE}, ${PROXY_ROLE}, ${ORG_ROLE};
    grant select, insert, update on pgbench_accounts, pgbench_branches, pgbench_tellers,
      pgbench_history to ${APP_ROLE}, ${ORG_ROLE};
  `);
  const orgId = (await db.query(`select pgvpd.org_create('Bench', $1)::text as id`, [ORG_DATABASE]))
    .rows[0].id;
  const org2Id = (
    await db.query(`select pgvpd.org_create('Bench 2', $1)::text as id`, [ORG2_DATABASE])
  ).rows[0].id;
  const orgVerifier = makeVerifier(passwords.alice);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgId, ORG_USER, orgVerifier, ORG_ROLE]);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    org2Id,
    ORG2_USER,
    makeVerifier(passwords.bob),
    ORG_ROLE,
  ]);
  const metricsToken = (
    await db.query(`select token from pgvpd.token_create('metrics', null, 'bench')`)
  ).rows[0].token;
  await db.query('vacuum analyze');
  const verifier = (
    await db.query(`select rolpassword from pg_authid where rolname = $1`, [ORG_ROLE])
  ).rows[0].rolpassword;
  if (!verifier.startsWith('SCRAM-SHA-256$')) throw new Error(`not a SCRAM verifier: ${verifier}`);
  return { db, version, passwords, orgId, org2Id, verifier, orgVerifier, metricsToken };
}

// `tree`: the checkout whose files run (ROOT, or PGVPD_BENCH_BEFORE's). `prefix`: a command
// the proxy runs under (prlimit for the idle part).
async function startPgvpd(
  name,
  command,
  { pgPort, controlUrl, proxyPassword, passfile },
  { tree = ROOT, prefix = [] } = {},
) {
  if (!existsSync(join(tree, command[0]))) {
    throw new Error(
      `${join(tree, command[0])} does not exist (run npx tsc -p tsconfig.json there)`,
    );
  }
  const port = await freePort();
  const adminPort = command.includes('{adminPort}') ? await freePort() : null;
  const fill = {
    '{port}': String(port),
    '{pgport}': String(pgPort),
    '{controlUrl}': controlUrl,
    '{passfile}': passfile,
    '{adminPort}': String(adminPort),
  };
  const args = [
    ...(process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
    ...command.map((a) => fill[a] ?? a),
  ];
  const [file, ...rest] = [...prefix, process.execPath, ...args];
  const server = await startServer(name, file, rest, port, {
    cwd: tree,
    env: { PGPASSWORD: proxyPassword },
  });
  return { ...server, adminPort };
}

// ---------------------------------------------------------------------------------------------
// Measurements

function clientConfig(t) {
  return {
    host: '127.0.0.1',
    port: t.port,
    user: t.user,
    database: t.database,
    password: t.password,
  };
}

async function checkTarget(t) {
  const c = new pg.Client(clientConfig(t));
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query(
      `select current_user::text as role, pgvpd.current_tenant_id() as tenant,
              (select count(*) from pgbench_branches)::int as branches`,
    );
    const row = r.rows[0];
    if (row.role !== t.role || row.tenant !== t.tenant || row.branches !== SCALE) {
      throw new Error(
        `${t.name}: expected role ${t.role}, tenant ${t.tenant}, ${SCALE} branches; got ${JSON.stringify(row)}`,
      );
    }
    return row;
  } finally {
    await c.end();
  }
}

// The sample of a run that failed: no figures (medians leave it out, its ratios are NaN).
const FAILED_RUN = {
  failed: true,
  tps: null,
  transactions: null,
  avgConnectMs: null,
  cpuUs: null,
  cpuUsPerTx: null,
  userUsPerTx: null,
  systemUsPerTx: null,
  pgCpuUsPerTx: null,
  totalCpuUsPerTx: null,
  clientCpuUsPerTx: null,
  backendsStarted: null,
  switchCalls: null,
  switchesPerSecond: null,
  switchesPerTx: null,
  switchUsPerCall: null,
  switchSelfUsPerCall: null,
  ownerChangesPerSecond: null,
  switchedInPerSecond: null,
  resetReadyingUs: null,
};

function pgbenchArgs(t, proc, { churn, seconds }) {
  return [
    '-n',
    '-S',
    ...(churn ? ['-C'] : []),
    ...(proc.args ?? []),
    '-c',
    `${proc.clients}`,
    '-j',
    `${proc.threads}`,
    '-T',
    `${seconds}`,
    '-h',
    '127.0.0.1',
    '-p',
    `${t.port}`,
    '-U',
    t.user,
    t.database,
  ];
}

// When the last pgbench run ended: a run whose switches are counted first waits STATS_SETTLE_MS
// from then, so that no earlier run's function statistics are flushed into its window.
let lastRunEnd = 0;

/**
 * One run: its pgbench processes started together against one server, their TPS and
 * transactions summed; the server's CPU, PostgreSQL's CPU and, for `run.switches`, the
 * switch_context calls and owner switches over it. `warmup`: TPS only.
 */
async function measureRun(run, targets, { db, pmPid, metricsToken, seconds, warmup = false }) {
  const server = targets[run.procs[0].target];
  const pid = server.pid;
  const counted = run.switches && !warmup;
  if (counted) await sleep(Math.max(0, lastRunEnd + STATS_SETTLE_MS - Date.now()));
  const startedBefore = await backendsStarted(db, DATABASE);
  const fnBefore = counted ? await switchContextStats(db) : null;
  const poolBefore = counted ? await poolMetrics(server.adminPort, metricsToken) : null;
  const pgBefore = clusterCpuTicks(pmPid).ticks;
  const before = pid ? cpuTimes(pid) : null;
  const clientBefore = reapedChildrenTicks();
  // Every process is waited for, also when one fails, so that none runs on into the next run.
  const settled = await Promise.allSettled(
    run.procs.map((proc) => {
      const t = targets[proc.target];
      return pgbenchProcess(t, proc, { churn: run.churn, seconds });
    }),
  );
  lastRunEnd = Date.now();
  const failure = settled.find((r) => r.status === 'rejected');
  if (failure) throw failure.reason;
  const outputs = settled.map((r) => r.value);
  const after = pid ? cpuTimes(pid) : null;
  // pgbench's own CPU (its SCRAM with the client's PBKDF2 above all): the share of the machine
  // the servers are left with under -C.
  const clientCpuUs = ((reapedChildrenTicks() - clientBefore) * 1e6) / CLK_TCK;
  // pg_stat_database is flushed by backends at most once a second and when they exit; exiting
  // backends are reaped (their CPU in the postmaster's cutime) by then too.
  await sleep(1100);
  const pgAfter = clusterCpuTicks(pmPid).ticks;
  const startedAfter = await backendsStarted(db, DATABASE);
  const parsed = outputs.map((output) => parsePgbench(output));
  const transactions = parsed.reduce((a, p) => a + p.transactions, 0);
  const tps = parsed.reduce((a, p) => a + p.tps, 0);
  const conns = parsed.map((p) => p.avgConnectMs).filter((x) => x !== null);
  const us = (key) => (pid ? ((after[key] - before[key]) * 1e6) / CLK_TCK : null);
  const cpuUs = pid ? us('user') + us('system') : null;
  const pgCpuUs = ((pgAfter - pgBefore) * 1e6) / CLK_TCK;
  const x = {
    tps,
    // Each process's own TPS: how the pair shared the machine and the pool.
    tpsByProcess: parsed.map((p) => p.tps),
    // Without -C: how long each process took to open its clients' connections (pgbench's
    // "initial connection time"), which its TPS leaves out.
    initialConnectMsByProcess: parsed.map((p) => p.initialConnectMs),
    transactions,
    avgConnectMs: conns.length ? conns.reduce((a, b) => a + b, 0) / conns.length : null,
    cpuUs,
    cpuUsPerTx: cpuUs === null ? null : cpuUs / transactions,
    userUsPerTx: cpuUs === null ? null : us('user') / transactions,
    systemUsPerTx: cpuUs === null ? null : us('system') / transactions,
    pgCpuUsPerTx: pgCpuUs / transactions,
    // A reference without upstream (floor) has no PostgreSQL share; direct has no proxy share.
    totalCpuUsPerTx: ((cpuUs ?? 0) + pgCpuUs) / transactions,
    clientCpuUsPerTx: clientCpuUs / transactions,
    backendsStarted: startedAfter - startedBefore,
    switchCalls: null,
    switchesPerSecond: null,
    switchesPerTx: null,
    switchUsPerCall: null,
    switchSelfUsPerCall: null,
    ownerChangesPerSecond: null,
    switchedInPerSecond: null,
    resetReadyingUs: null,
  };
  if (counted) {
    await sleep(Math.max(0, lastRunEnd + STATS_SETTLE_MS - Date.now()));
    const fn = switchContextDelta(fnBefore, await switchContextStats(db));
    const poolAfter = await poolMetrics(server.adminPort, metricsToken);
    Object.assign(x, {
      switchCalls: fn.calls,
      switchesPerSecond: fn.calls / seconds,
      switchesPerTx: fn.calls / transactions,
      switchUsPerCall: fn.calls > 0 ? (fn.totalMs * 1000) / fn.calls : null,
      switchSelfUsPerCall: fn.calls > 0 ? (fn.selfMs * 1000) / fn.calls : null,
      ...poolMetricsDelta(poolBefore, poolAfter, seconds),
    });
  }
  return x;
}

function pgbenchProcess(t, proc, { churn, seconds }) {
  return run(PGBENCH, pgbenchArgs(t, proc, { churn, seconds }), {
    env: { PGPASSWORD: t.password },
  });
}

/** A run of one pgbench process, -c 8 -j 2, against `target`. */
const single = (kind, target, churn) => ({
  kind,
  name: target,
  churn,
  procs: [{ target, clients: CLIENTS, threads: THREADS }],
});
/** A run of two pgbench processes started together, `a` and `b` (targets of one server). */
const pair = (kind, name, a, b, { churn, clients, threads, args, switches }) => ({
  kind,
  name,
  churn,
  switches,
  procs: [a, b].map((target) => ({ target, clients, threads, args })),
});

// The runs of one round, in this order, rotated by one each round.
function runsOf(parts) {
  const churn2 = { churn: true, clients: CHURN2_CLIENTS, threads: CHURN2_THREADS };
  const tx = { churn: false, clients: TX_CLIENTS, threads: TX_THREADS };
  return [
    ...(parts.has('churn')
      ? [
          single('churn', 'direct', true),
          single('churn', 'pgbouncer', true),
          single('churn', 'org', true),
          ...(BEFORE ? [single('churn', 'org-before', true)] : []),
          single('churn', 'nocontext', true),
          single('churn', 'floor', true),
          single('churn', 'app', true),
          ...(BEFORE ? [single('churn', 'app-before', true)] : []),
          pair('churn2', 'pgbouncer', 'pgbouncer', 'pgbouncer', churn2),
          pair('churn2', 'org', 'org', 'org-bob', { ...churn2, switches: true }),
        ]
      : []),
    ...(parts.has('steady')
      ? [
          single('steady', 'app', false),
          single('steady', 'org', false),
          ...(BEFORE
            ? [single('steady', 'app-before', false), single('steady', 'org-before', false)]
            : []),
        ]
      : []),
    ...(parts.has('tx')
      ? [
          pair('tx', 'pgbouncer', 'pgbouncer-tx', 'pgbouncer-tx', tx),
          pair('tx', 'org', 'tx-alice', 'tx-bob', { ...tx, switches: true }),
          pair('tx', 'org-prepared', 'tx-alice', 'tx-bob', {
            ...tx,
            args: ['-M', 'prepared'],
            switches: true,
          }),
          pair('tx', 'org-one-owner', 'tx-alice', 'tx-alice', { ...tx, switches: true }),
        ]
      : []),
  ];
}

const KINDS = ['churn', 'churn2', 'steady', 'tx'];

async function runPgbench(runs, targets, ctx) {
  log(`warm-up: pgbench -T ${WARMUP_SECONDS} of each run`);
  for (const r of runs) {
    try {
      await measureRun(r, targets, { ...ctx, seconds: WARMUP_SECONDS, warmup: true });
    } catch (err) {
      log(`warm-up ${r.kind} ${r.name} FAILED: ${err.message.split('\n').slice(0, 8).join(' / ')}`);
    }
  }
  const results = Object.fromEntries(KINDS.map((k) => [k, {}]));
  results.failures = [];
  for (const r of runs) results[r.kind][r.name] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = runs.map((_, k) => runs[(k + round - 1) % runs.length]);
    for (const r of order) {
      let x;
      try {
        x = await measureRun(r, targets, { ...ctx, seconds: SECONDS });
      } catch (err) {
        // A failed run (e.g. a connection the proxy refused) is recorded and reported, with the
        // proxy's last output; the other runs go on.
        const output = targets[r.procs[0].target].output?.().trim();
        const failure = `${err.message.split('\n').slice(0, 8).join(' / ')}`;
        log(`round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.name.padEnd(13)} FAILED: ${failure}`);
        if (output) log(`${r.name}'s last output: ${output}`);
        results.failures.push({
          round,
          kind: r.kind,
          target: r.name,
          failure,
          output: output ?? null,
        });
        results[r.kind][r.name].push(FAILED_RUN);
        continue;
      }
      results[r.kind][r.name].push(x);
      const extra = [
        x.avgConnectMs === null ? null : `avg connect ${x.avgConnectMs.toFixed(2)} ms`,
        x.cpuUsPerTx === null ? null : `proxy ${x.cpuUsPerTx.toFixed(1)} µs CPU/tx`,
        `PostgreSQL ${x.pgCpuUsPerTx.toFixed(1)} µs CPU/tx`,
        `pgbench ${x.clientCpuUsPerTx.toFixed(1)} µs CPU/tx`,
        `${x.backendsStarted} backends started`,
        x.switchCalls === null
          ? null
          : `${x.switchCalls} switch_context calls (${fmt(x.switchUsPerCall, 1)} µs each)`,
        x.ownerChangesPerSecond === null
          ? null
          : `${x.ownerChangesPerSecond.toFixed(0)} owner changes/s (metric)`,
      ].filter(Boolean);
      const each =
        x.tpsByProcess.length > 1
          ? ` (${x.tpsByProcess.map((t) => t.toFixed(0)).join(' + ')}` +
            (x.initialConnectMsByProcess.every((m) => m !== null)
              ? `; connections opened in ${x.initialConnectMsByProcess.map((m) => m.toFixed(0)).join(' / ')} ms)`
              : ')')
          : '';
      log(
        `round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.name.padEnd(13)} ${x.tps.toFixed(0)} tps${each}, ${extra.join(', ')}`,
      );
    }
  }
  return results;
}

// Connect (SCRAM) and end, one at a time, the targets interleaved and rotated; milliseconds.
// Each proxy is idle but for its own target's connections, so its CPU over the whole loop divided
// by the connects through it (warm-up included) is its CPU per connect.
async function connectLatency(targets) {
  const ms = Object.fromEntries(targets.map((t) => [t.name, { connect: [], total: [] }]));
  const cpuBefore = Object.fromEntries(
    targets.filter((t) => t.pid).map((t) => [t.name, cpuTimes(t.pid)]),
  );
  for (let i = 0; i < CONNECT_WARMUP + CONNECTS; i++) {
    const order = targets.map((_, k) => targets[(i + k) % targets.length]);
    for (const t of order) {
      const t0 = process.hrtime.bigint();
      const c = new pg.Client(clientConfig(t));
      c.on('error', () => {});
      await c.connect();
      const t1 = process.hrtime.bigint();
      await c.end();
      const t2 = process.hrtime.bigint();
      if (i >= CONNECT_WARMUP) {
        ms[t.name].connect.push(Number(t1 - t0) / 1e6);
        ms[t.name].total.push(Number(t2 - t0) / 1e6);
      }
    }
  }
  const cpuUsPerConnect = Object.fromEntries(
    targets
      .filter((t) => t.pid)
      .map((t) => {
        const a = cpuBefore[t.name];
        const b = cpuTimes(t.pid);
        const ticks = b.user - a.user + (b.system - a.system);
        return [t.name, (ticks * 1e6) / CLK_TCK / (CONNECT_WARMUP + CONNECTS)];
      }),
  );
  return Object.fromEntries(
    Object.entries(ms).map(([name, { connect: c, total }]) => [
      name,
      {
        n: c.length,
        cpuUsPerConnect: cpuUsPerConnect[name] ?? null,
        connectP50: percentile(c, 50),
        connectP99: percentile(c, 99),
        totalP50: percentile(total, 50),
        totalP99: percentile(total, 99),
        totalMean: total.reduce((a, b) => a + b, 0) / total.length,
      },
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// Report

// Ratios of TPS: [kind, numerator, denominator, target or undefined]; those whose runs were not
// part of the run are left out.
const ALL_RATIOS = [
  ['churn', 'org', 'direct', CHURN_OVER_DIRECT],
  ['churn', 'org', 'pgbouncer', CHURN_OVER_PGBOUNCER],
  ['churn', 'pgbouncer', 'direct', undefined],
  ['churn', 'org', 'app', undefined],
  ['churn', 'floor', 'pgbouncer', undefined],
  ['churn', 'org', 'floor', undefined],
  ['churn', 'nocontext', 'pgbouncer', undefined],
  ['churn', 'org', 'nocontext', undefined],
  ['churn2', 'org', 'pgbouncer', CHURN2_OVER_PGBOUNCER],
  ['steady', 'org', 'app', STEADY_OVER_APP],
  ['tx', 'org', 'pgbouncer', TX_OVER_PGBOUNCER],
  ['tx', 'org-prepared', 'org', TX_PREPARED_OVER_SIMPLE],
  ['tx', 'org-prepared', 'pgbouncer', undefined],
  ['tx', 'org', 'org-one-owner', undefined],
  ['churn', 'org-before', 'direct', undefined],
  ['churn', 'org-before', 'pgbouncer', undefined],
  ['churn', 'org', 'org-before', undefined],
  ['churn', 'app', 'app-before', undefined],
  ['steady', 'org-before', 'app-before', undefined],
  ['steady', 'org', 'org-before', undefined],
  ['steady', 'app', 'app-before', undefined],
];

const FIGURES = [
  'tps',
  'avgConnectMs',
  'cpuUsPerTx',
  'userUsPerTx',
  'systemUsPerTx',
  'pgCpuUsPerTx',
  'totalCpuUsPerTx',
  'clientCpuUsPerTx',
  'backendsStarted',
  'switchesPerSecond',
  'switchesPerTx',
  'switchUsPerCall',
  'switchSelfUsPerCall',
  'ownerChangesPerSecond',
  'switchedInPerSecond',
  'resetReadyingUs',
];

/** The idle part met its target: it ran, every client was served right, VmRSS within bounds. */
const idleOk = (idle) =>
  !idle.failedPart &&
  idle.cycles.every((c) => c.failed === 0 && c.wrongTenant === 0 && c.idleRssMb <= IDLE_RSS_MB);

function summarize(bench, latency, idle) {
  const summary = Object.fromEntries(FIGURES.map((f) => [f, {}]));
  for (const kind of KINDS) {
    for (const f of FIGURES) summary[f][kind] = {};
    for (const [name, xs] of Object.entries(bench[kind])) {
      for (const f of FIGURES) summary[f][kind][name] = medianOf(xs.map((x) => x[f]));
    }
  }
  // Per process of a pair, the median of its TPS.
  summary.tpsByProcess = {};
  for (const kind of KINDS) {
    summary.tpsByProcess[kind] = {};
    for (const [name, xs] of Object.entries(bench[kind])) {
      const ok = xs.filter((x) => !x.failed);
      const count = ok[0]?.tpsByProcess.length ?? 0;
      summary.tpsByProcess[kind][name] = Array.from({ length: count }, (_, i) =>
        medianOf(ok.map((x) => x.tpsByProcess[i])),
      );
    }
  }
  summary.ratios = {};
  summary.roundRatios = {};
  summary.verdicts = {};
  const ratios = ALL_RATIOS.filter(([kind, a, b]) => bench[kind][a] && bench[kind][b]);
  for (const [kind, a, b, target] of ratios) {
    const key = `${kind} ${a}/${b}`;
    const ratio = summary.tps[kind][a] / summary.tps[kind][b];
    summary.ratios[key] = ratio;
    summary.roundRatios[key] = bench[kind][a].map((x, i) =>
      x.tps === null || bench[kind][b][i].tps === null ? NaN : x.tps / bench[kind][b][i].tps,
    );
    if (target !== undefined) summary.verdicts[`${key} ≥ ${target}`] = ratio >= target;
  }
  if (bench.churn.org) {
    const us = summary.totalCpuUsPerTx.churn.org;
    summary.verdicts[
      `churn org proxy + PostgreSQL CPU per churned connection ≤ ${CHURN_CPU_US} µs`
    ] = us !== null && us <= CHURN_CPU_US;
  }
  // The whole cost of one switch, per round: what a transaction of org costs more than one of
  // org-one-owner (proxy + PostgreSQL CPU), over the switch_context calls it makes more; none
  // when that is under one switch per 200 transactions (the CPU difference is then noise).
  if (bench.tx.org && bench.tx['org-one-owner']) {
    summary.switchCostUsRounds = bench.tx.org.map((x, i) => {
      const y = bench.tx['org-one-owner'][i];
      if (x.failed || y.failed || x.switchesPerTx === null || y.switchesPerTx === null) return null;
      const more = x.switchesPerTx - y.switchesPerTx;
      return more >= 0.005 ? (x.totalCpuUsPerTx - y.totalCpuUsPerTx) / more : null;
    });
    summary.switchCostUs = medianOf(summary.switchCostUsRounds);
  }
  summary.latency = latency;
  summary.idle = idle;
  if (idle) {
    summary.verdicts[
      `idle ${idle.clients} clients in transaction mode: proxy VmRSS ≤ ${IDLE_RSS_MB} MB`
    ] = idleOk(idle);
  }
  return summary;
}

function report(meta, bench, summary) {
  const out = [
    '',
    `pgvpd org-mode benchmark: ${meta.server}, PostgreSQL ${meta.version}, ${meta.pgbouncer}, Node ${process.version}, ${meta.cpus} CPUs`,
    `parts ${meta.parts.join(',')}; pgbench -n -S -T ${SECONDS} (scale ${SCALE}), SCRAM, ${ROUNDS} interleaved rounds, medians`,
    `load average at start ${meta.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}, ` +
      `at end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
    `org, app, nocontext, floor, tx, idle: ${ROOT} at ${meta.commits.after}` +
      (BEFORE ? `; org-before, app-before: ${BEFORE} at ${meta.commits.before}` : ''),
  ];
  const ratioCell = (kind, a, b) => {
    const [, , , target] = ALL_RATIOS.find((r) => r[0] === kind && r[1] === a && r[2] === b);
    const r = summary.ratios[`${kind} ${a}/${b}`];
    if (r === undefined) return '–';
    return target === undefined
      ? `${r.toFixed(3)}×`
      : `${r.toFixed(3)}× (≥ ${target} ${verdict(r >= target)})`;
  };
  const s = (f, kind, n, digits = 0) => fmt(summary[f][kind][n], digits);
  // TPS, and each process's of a pair (medians).
  const tpsCell = (kind, n) => {
    const each = summary.tpsByProcess[kind][n] ?? [];
    return each.length > 1
      ? `${s('tps', kind, n)} (${each.map((t) => fmt(t)).join(' + ')})`
      : s('tps', kind, n);
  };
  const cpuCells = (kind, n) => [
    summary.cpuUsPerTx[kind][n] === null
      ? '–'
      : `${s('cpuUsPerTx', kind, n, 1)} (${s('userUsPerTx', kind, n)} / ${s('systemUsPerTx', kind, n)})`,
    s('pgCpuUsPerTx', kind, n, 1),
    s('totalCpuUsPerTx', kind, n, 1),
    s('clientCpuUsPerTx', kind, n, 1),
  ];
  const churnRows = (kind) =>
    Object.keys(bench[kind]).map((n) => [
      n,
      tpsCell(kind, n),
      s('avgConnectMs', kind, n, 2),
      ...cpuCells(kind, n),
      s('backendsStarted', kind, n),
    ]);
  const head = (per) => [
    'target',
    'TPS',
    'avg connect ms',
    `proxy CPU µs/${per} (user / sys)`,
    `PostgreSQL CPU µs/${per}`,
    `proxy + PostgreSQL µs/${per}`,
    `pgbench CPU µs/${per}`,
    'backends started',
  ];

  if (Object.keys(bench.churn).length > 0) {
    out.push(
      '',
      `1. Connection churn, one user: pgbench -C -c ${CLIENTS} -j ${THREADS} (a new SCRAM connection per transaction)`,
      '',
    );
    out.push(...table(head('conn'), churnRows('churn')));
    out.push(
      '',
      `   org/direct ${ratioCell('churn', 'org', 'direct')}, org/pgbouncer ${ratioCell('churn', 'org', 'pgbouncer')}, ` +
        `pgbouncer/direct ${ratioCell('churn', 'pgbouncer', 'direct')}, org/app ${ratioCell('churn', 'org', 'app')}`,
      `   org: proxy + PostgreSQL ${s('totalCpuUsPerTx', 'churn', 'org', 1)} µs per churned connection ` +
        `(≤ ${CHURN_CPU_US} ${verdict(summary.totalCpuUsPerTx.churn.org !== null && summary.totalCpuUsPerTx.churn.org <= CHURN_CPU_US)}); ` +
        `pgbouncer ${s('totalCpuUsPerTx', 'churn', 'pgbouncer', 1)} µs`,
      `   floor/pgbouncer ${ratioCell('churn', 'floor', 'pgbouncer')}, org/floor ${ratioCell('churn', 'org', 'floor')} ` +
        `(floor: a Node.js server doing only the SCRAM handshake, canned answers, no upstream)`,
      `   nocontext/pgbouncer ${ratioCell('churn', 'nocontext', 'pgbouncer')}, org/nocontext ${ratioCell('churn', 'org', 'nocontext')} ` +
        `(nocontext: org mode without switch_context at checkout and without the restore at release)`,
    );
    if (BEFORE) {
      out.push(
        `   before (${BEFORE} at ${meta.commits.before}): ` +
          `org/org-before ${ratioCell('churn', 'org', 'org-before')}, app/app-before ${ratioCell('churn', 'app', 'app-before')}, ` +
          `org-before/pgbouncer ${ratioCell('churn', 'org-before', 'pgbouncer')}, org-before/direct ${ratioCell('churn', 'org-before', 'direct')}`,
      );
    }
    out.push(
      '',
      `   Two at once: two pgbench -C -c ${CHURN2_CLIENTS} -j ${CHURN2_THREADS} started together ` +
        `(org: alice of ${ORG_DATABASE} and bob of ${ORG2_DATABASE}, one pool; pgbouncer: ${ORG_ROLE} twice), TPS summed`,
      '',
    );
    out.push(
      ...table(
        [...head('conn'), 'switch_context/s', 'per conn'],
        churnRows('churn2').map((r, i) => {
          const n = Object.keys(bench.churn2)[i];
          return [...r, s('switchesPerSecond', 'churn2', n), s('switchesPerTx', 'churn2', n, 2)];
        }),
      ),
    );
    out.push(
      '',
      `   org/pgbouncer ${ratioCell('churn2', 'org', 'pgbouncer')}`,
      `   pgbench's own CPU per connection (its SCRAM): one process of ${THREADS} threads ` +
        `${s('clientCpuUsPerTx', 'churn', 'pgbouncer', 0)} µs (pgbouncer run), two processes ` +
        `${s('clientCpuUsPerTx', 'churn2', 'pgbouncer', 0)} µs: what it leaves of the machine to the servers`,
    );
  }

  if (Object.keys(bench.steady).length > 0) {
    out.push('', `2. Steady state: pgbench -c ${CLIENTS} -j ${THREADS} without -C`, '');
    out.push(...table(head('tx'), churnRows('steady')));
    out.push('', `   org/app ${ratioCell('steady', 'org', 'app')}`);
    if (BEFORE) {
      out.push(
        `   before: org-before/app-before ${ratioCell('steady', 'org-before', 'app-before')}, ` +
          `org/org-before ${ratioCell('steady', 'org', 'org-before')}, app/app-before ${ratioCell('steady', 'app', 'app-before')}`,
      );
    }
  }

  const lat = summary.latency;
  if (lat) {
    out.push(
      '',
      `3. SCRAM connect (to ReadyForQuery) and close, pg Client, sequential, ${CONNECTS} iterations after ${CONNECT_WARMUP} warm-up, ms`,
      '',
    );
    out.push(
      ...table(
        [
          'target',
          'connect p50',
          'p99',
          'with close p50',
          'p99',
          'mean',
          'p50 − direct',
          'proxy CPU µs/connect',
        ],
        Object.entries(lat).map(([n, l]) => [
          n,
          fmt(l.connectP50, 2),
          fmt(l.connectP99, 2),
          fmt(l.totalP50, 2),
          fmt(l.totalP99, 2),
          fmt(l.totalMean, 2),
          n === 'direct'
            ? ''
            : `${fmt(l.connectP50 - lat.direct.connectP50, 2)} / ${fmt(l.totalP50 - lat.direct.totalP50, 2)}`,
          fmt(l.cpuUsPerConnect, 0),
        ]),
      ),
    );
    out.push('   (p50 − direct: connect / with close)');
  }

  if (Object.keys(bench.tx).length > 0) {
    out.push(
      '',
      `4. Transaction pooling: two pgbench -S -c ${TX_CLIENTS} -j ${TX_THREADS} started together (${2 * TX_CLIENTS} clients), pool of ${TX_POOL_SIZE} backends, TPS summed`,
      '',
    );
    out.push(
      ...table(
        [
          'target',
          'TPS (each process)',
          'proxy CPU µs/tx (user / sys)',
          'PostgreSQL CPU µs/tx',
          'proxy + PostgreSQL µs/tx',
          'pgbench CPU µs/tx',
          'backends started',
          'switch_context/s',
          'µs per call (self)',
          'owner changes/s (metric)',
          'switched in/s (metric)',
          'readying µs per owner change (metric)',
        ],
        Object.keys(bench.tx).map((n) => [
          n,
          tpsCell('tx', n),
          ...cpuCells('tx', n),
          s('backendsStarted', 'tx', n),
          s('switchesPerSecond', 'tx', n),
          summary.switchUsPerCall.tx[n] === null
            ? '–'
            : `${s('switchUsPerCall', 'tx', n, 1)} (${s('switchSelfUsPerCall', 'tx', n, 1)})`,
          s('ownerChangesPerSecond', 'tx', n),
          s('switchedInPerSecond', 'tx', n),
          s('resetReadyingUs', 'tx', n),
        ]),
      ),
    );
    out.push(
      '',
      `   org/pgbouncer ${ratioCell('tx', 'org', 'pgbouncer')}, org-prepared/org ${ratioCell('tx', 'org-prepared', 'org')}, ` +
        `org-prepared/pgbouncer ${ratioCell('tx', 'org-prepared', 'pgbouncer')}, org/org-one-owner ${ratioCell('tx', 'org', 'org-one-owner')}`,
      `   (org: alice and bob, one pool of ${TX_POOL_SIZE}; org-prepared: the same with -M prepared; org-one-owner: alice twice, no owner change;` +
        ` pgbouncer: PgBouncer transaction mode, ${ORG_ROLE} twice, one pool of ${TX_POOL_SIZE}; no -M prepared in PgBouncer 1.18)`,
      `   one switch costs ${fmt(summary.switchCostUs, 1)} µs of proxy + PostgreSQL CPU ` +
        `(rounds: ${(summary.switchCostUsRounds ?? []).map((x) => fmt(x, 1)).join(', ')}; ` +
        `org − org-one-owner CPU per transaction / switch_context calls per transaction more), ` +
        `of which switch_context itself ${s('switchUsPerCall', 'tx', 'org', 1)} µs on the backend (pg_stat_user_functions total_time / calls)`,
      `   (metric columns: the proxy's pgvpd_pool_owner_switches_total, kind reset = owner changes, all kinds = contexts switched in; ` +
        `pgvpd_pool_readying_seconds of kind reset: the proxy's wait for reset + switch, wall clock; – when not exported)`,
    );
  }
  const sc = summary.switchCost;
  if (sc?.failedPart) {
    out.push('', `   One switch on one backend: FAILED: ${sc.failedPart}`);
  } else if (sc) {
    out.push(
      '',
      `   One switch on one backend (a pg Client as ${ORG_ROLE}, the proxy's reset text and grant code, owners alternating, ${sc.n} each after ${sc.warmup}):`,
      '',
      ...table(
        ['operation', 'backend CPU µs', 'client wall p50 µs'],
        Object.entries(sc.variants).map(([name, v]) => [
          name,
          fmt(v.backendCpuUs, 1),
          fmt(v.wallP50Us, 0),
        ]),
      ),
      '',
      `   minting one grant (claims + HMAC-SHA256) in the proxy's code: ${fmt(sc.mintUs, 2)} µs; ` +
        `reset and switch are two round trips here, one write in the proxy`,
    );
  }

  const idle = summary.idle;
  if (idle?.failedPart) {
    out.push(
      '',
      `5. Idle clients in transaction mode: ${idle.clients} clients: FAILED: ${idle.failedPart}`,
      ...(idle.output ? [`   the proxy's last output: ${idle.output}`] : []),
    );
  } else if (idle) {
    const perClientKb = ((idle.idle.rssMb - idle.before.rssMb) * 1024) / Math.max(1, idle.opened);
    out.push(
      '',
      `5. Idle clients in transaction mode: ${idle.clients} clients of ${idle.users} users, ${idle.concurrency} logins at a time, one query each, then idle`,
      '',
      ...table(
        ['', 'VmRSS MB', 'VmHWM MB', 'open fds'],
        [
          [
            'before (fresh proxy)',
            fmt(idle.before.rssMb, 1),
            fmt(idle.before.hwmMb, 1),
            idle.before.fds,
          ],
          [
            `with ${idle.opened} idle`,
            fmt(idle.idle.rssMb, 1),
            fmt(idle.idle.hwmMb, 1),
            idle.idle.fds,
          ],
          ['after they left', fmt(idle.after.rssMb, 1), fmt(idle.after.hwmMb, 1), idle.after.fds],
        ],
      ),
      '',
      `   opened ${idle.opened} in ${idle.seconds.toFixed(1)} s, ${idle.failed} failed, ${idle.wrongTenant} with a wrong tenant; ` +
        `${fmt(perClientKb, 1)} KB of RSS per idle client; ` +
        `one more login with them all idle: ${idle.extra.ok ? `${fmt(idle.extra.connectMs, 2)} ms` : `FAILED ${idle.extra.error ?? 'wrong tenant'}`}`,
      ...(idle.cycles.length > 1
        ? [
            `   cycles (VmRSS MB with them idle → after they left): ` +
              idle.cycles
                .map(
                  (c, i) =>
                    `${i + 1}: ${fmt(c.idleRssMb, 1)} → ${fmt(c.afterRssMb, 1)}` +
                    (c.failed || c.wrongTenant
                      ? ` (${c.failed} failed, ${c.wrongTenant} wrong tenant)`
                      : ''),
                )
                .join('; '),
          ]
        : []),
      `   VmRSS ≤ ${IDLE_RSS_MB} MB${idle.cycles.length > 1 ? ' in every cycle' : ''}: ${verdict(idleOk(idle))}` +
        (idle.errors.length ? `; errors: ${idle.errors.join('; ')}` : ''),
    );
  }

  const sampled = KINDS.filter((k) => Object.keys(bench[k]).length > 0);
  if (sampled.length > 0) {
    out.push('', 'TPS samples by round (and ratios within each round):');
    for (const kind of sampled) {
      for (const [n, xs] of Object.entries(bench[kind])) {
        out.push(
          `  ${kind.padEnd(6)} ${n.padEnd(15)} ${xs.map((x) => (x.failed ? 'failed' : fmt(x.tps))).join(', ')}`,
        );
      }
    }
    for (const [key, xs] of Object.entries(summary.roundRatios)) {
      const ok = xs.filter((x) => !Number.isNaN(x));
      out.push(
        `  ${key.padEnd(28)} ${xs.map((x) => (Number.isNaN(x) ? 'failed' : `${x.toFixed(3)}×`)).join(', ')}` +
          `  median ${ok.length ? median(ok).toFixed(3) : '–'}×  (ratio of medians ${summary.ratios[key].toFixed(3)}×)`,
      );
    }
  }
  if (bench.failures.length > 0) {
    out.push('', `FAILED runs (${bench.failures.length}), left out of the medians:`);
    for (const f of bench.failures) {
      out.push(`  round ${f.round} ${f.kind} ${f.target}: ${f.failure}`);
    }
  }

  out.push('', 'Targets:');
  for (const [k, ok] of Object.entries(summary.verdicts)) out.push(`  ${verdict(ok)}  ${k}`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------

/** PGVPD_BENCH_HOLD: keep the servers up for manual runs and profiling until Ctrl-C. */
async function hold(targets) {
  for (const t of Object.values(targets)) {
    process.stdout.write(
      `${t.name.padEnd(13)} pid ${String(t.pid ?? '-').padEnd(8)} PGPASSWORD=${t.password} ` +
        `${PGBENCH} -n -S -C -c 8 -j 2 -T 10 -h 127.0.0.1 -p ${t.port} -U ${t.user} ${t.database}\n`,
    );
  }
  log('holding the servers; Ctrl-C ends the run');
  await new Promise((resolve) => process.once('SIGINT', resolve));
}

async function main() {
  if (!existsSync(join(ROOT, 'dist/proxy/auth/scram-verifier.js'))) {
    throw new Error(
      'dist/proxy/auth/scram-verifier.js does not exist (run npx tsc -p tsconfig.json)',
    );
  }
  const loadavgAtStart = loadavg();
  const cluster = await startCluster({
    authHost: 'scram-sha-256',
    conf: [
      `max_connections = 300`,
      `password_encryption = 'scram-sha-256'`,
      // pgvpd.switch_context (PL/pgSQL) counted and timed in pg_stat_user_functions.
      `track_functions = 'pl'`,
    ],
  });
  const pmPid = postmasterPid(join(cluster.dir, 'data'));
  const { db, version, passwords, orgId, org2Id, verifier, orgVerifier, metricsToken } =
    await setupDatabase(cluster.adminUrl);
  try {
    const passfile = join(tempDir('pgvpd-bench-passfile-'), 'passfile');
    writeFileSync(passfile, `*:*:*:${ORG_ROLE}:${passwords.org}\n`, { mode: 0o600 });
    const controlUrl = `postgres://${PROXY_ROLE}@127.0.0.1:${cluster.port}/${DATABASE}`;
    const pgvpdOptions = {
      pgPort: cluster.port,
      controlUrl,
      proxyPassword: passwords.proxy,
      passfile,
    };
    const sessionParts = PARTS.has('churn') || PARTS.has('steady') || PARTS.has('connect');
    const asOrgRole = {
      user: ORG_ROLE,
      database: DATABASE,
      password: passwords.org,
      role: ORG_ROLE,
    };
    const alice = {
      user: ORG_USER,
      database: ORG_DATABASE,
      password: passwords.alice,
      role: ORG_ROLE,
      tenant: orgId,
    };
    const bob = {
      user: ORG2_USER,
      database: ORG2_DATABASE,
      password: passwords.bob,
      role: ORG_ROLE,
      tenant: org2Id,
    };
    const server = (name, s, who, extra = {}) => ({
      name,
      port: s.port,
      pid: s.pid,
      adminPort: s.adminPort ?? null,
      output: s.output,
      ...who,
      ...extra,
    });
    const targets = {};
    let bouncerVersion = '';

    if (sessionParts) {
      targets.direct = { name: 'direct', port: cluster.port, pid: null, ...asOrgRole };
      const bouncer = await startPgbouncer(cluster.port, {
        database: DATABASE,
        user: ORG_ROLE,
        verifier,
        poolSize: POOL_SIZE,
      });
      bouncerVersion = bouncer.version;
      targets.pgbouncer = server('pgbouncer', bouncer, asOrgRole);
      const orgProxy = await startPgvpd('pgvpd org', PGVPD_ORG_COMMAND, pgvpdOptions);
      targets.org = server('org', orgProxy, alice);
      targets['org-bob'] = server('org-bob', orgProxy, bob);
    }
    if (PARTS.has('churn') || PARTS.has('steady')) {
      const appProxy = await startPgvpd('pgvpd app', PGVPD_APP_COMMAND, pgvpdOptions);
      targets.app = server('app', appProxy, {
        user: `${APP_ROLE}.${TENANT}`,
        database: DATABASE,
        password: passwords.app,
        role: APP_ROLE,
        tenant: TENANT,
      });
      if (BEFORE) {
        const before = { tree: BEFORE };
        const orgBefore = await startPgvpd(
          'pgvpd org (before)',
          PGVPD_ORG_COMMAND,
          pgvpdOptions,
          before,
        );
        const appBefore = await startPgvpd(
          'pgvpd app (before)',
          PGVPD_APP_COMMAND,
          pgvpdOptions,
          before,
        );
        targets['org-before'] = { ...targets.org, ...server('org-before', orgBefore, alice) };
        targets['app-before'] = { ...targets.app, ...server('app-before', appBefore, {}) };
      }
    }
    if (PARTS.has('churn')) {
      const noContext = await startPgvpd(
        'pgvpd org without context',
        PGVPD_NOCONTEXT_COMMAND,
        pgvpdOptions,
      );
      targets.nocontext = server('nocontext', noContext, { ...alice, tenant: null });
      // The floor reference (bench/lib/node-floor.mjs), knowing alice and her verifier.
      const floor = await startFloor(
        ORG_USER,
        orgVerifier,
        process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [],
      );
      targets.floor = server('floor', floor, { ...alice, reference: true });
    }
    if (PARTS.has('tx')) {
      const bouncerTx = await startPgbouncer(cluster.port, {
        poolMode: 'transaction',
        maxClientConn: 500,
        database: DATABASE,
        user: ORG_ROLE,
        verifier,
        poolSize: TX_POOL_SIZE,
      });
      bouncerVersion ||= bouncerTx.version;
      targets['pgbouncer-tx'] = server('pgbouncer-tx', bouncerTx, asOrgRole);
      const txProxy = await startPgvpd('pgvpd org (transaction)', PGVPD_TX_COMMAND, pgvpdOptions);
      targets['tx-alice'] = server('tx-alice', txProxy, alice);
      targets['tx-bob'] = server('tx-bob', txProxy, bob);
    }
    let idleProxy;
    if (PARTS.has('idle')) {
      idleProxy = await startPgvpd('pgvpd org (idle)', PGVPD_IDLE_COMMAND, pgvpdOptions, {
        prefix: fdLimitPrefix(IDLE_CLIENTS + 256),
      });
    }
    for (const t of Object.values(targets)) {
      t.tenant ??= null;
      if (t.reference) continue; // canned answers: nothing to check
      const row = await checkTarget(t);
      log(`check ${t.name}: role ${row.role}, tenant ${row.tenant}, ${row.branches} branches`);
    }

    if (process.env.PGVPD_BENCH_HOLD) {
      await hold(targets);
      return;
    }

    const runs = runsOf(PARTS);
    let bench = { ...Object.fromEntries(KINDS.map((k) => [k, {}])), failures: [] };
    if (runs.length > 0) {
      log(`pgbench: ${runs.length} runs × ${ROUNDS} rounds × ${SECONDS} s`);
      bench = await runPgbench(runs, targets, { db, pmPid, metricsToken });
    }

    let switchCost = null;
    if (PARTS.has('tx')) {
      log(
        'one switch on one backend: select 1, switch, reset + switch, reset without DISCARD PLANS + switch',
      );
      try {
        switchCost = await measureSwitchCost({
          root: ROOT,
          server: { host: '127.0.0.1', port: cluster.port, database: DATABASE },
          proxy: { user: PROXY_ROLE, password: passwords.proxy },
          role: { user: ORG_ROLE, password: passwords.org },
          owners: [
            { org: orgId, user: ORG_USER },
            { org: org2Id, user: ORG2_USER },
          ],
        });
      } catch (err) {
        log(`one switch on one backend: FAILED: ${err.message}`);
        switchCost = { failedPart: err.message };
      }
    }

    let latency = null;
    if (PARTS.has('connect')) {
      log(`SCRAM connect + close: ${CONNECT_WARMUP} + ${CONNECTS} per target`);
      latency = await connectLatency([targets.direct, targets.pgbouncer, targets.org]);
    }

    let idle = null;
    if (idleProxy) {
      log(`idle: ${IDLE_CLIENTS} clients, ${IDLE_CONCURRENCY} logins at a time`);
      try {
        const cycles = [];
        for (let cycle = 1; cycle <= IDLE_CYCLES; cycle++) {
          if (IDLE_CYCLES > 1) log(`idle: cycle ${cycle} of ${IDLE_CYCLES}`);
          cycles.push(
            await measureIdleClients(idleProxy, {
              users: [alice, bob].map(({ user, database, password, tenant }) => ({
                user,
                database,
                password,
                tenant,
              })),
              clients: IDLE_CLIENTS,
              concurrency: IDLE_CONCURRENCY,
            }),
          );
        }
        // The first cycle's figures, and every cycle's memory and failures.
        idle = {
          ...cycles[0],
          cycles: cycles.map((c) => ({
            idleRssMb: c.idle.rssMb,
            afterRssMb: c.after.rssMb,
            opened: c.opened,
            failed: c.failed,
            wrongTenant: c.wrongTenant,
          })),
        };
      } catch (err) {
        // Reported with the proxy's last output; the other parts' figures are kept.
        const output = idleProxy.output().trim();
        log(`idle: FAILED: ${err.message}${output ? `; the proxy's last output: ${output}` : ''}`);
        idle = { clients: IDLE_CLIENTS, failedPart: err.message, output: output || null };
      }
    }

    const meta = {
      date: new Date().toISOString(),
      parts: ALL_PARTS.filter((p) => PARTS.has(p)),
      loadavgAtStart,
      loadavgAtEnd: loadavg(),
      server: cluster.server,
      version,
      pgbouncer: bouncerVersion || 'no PgBouncer',
      node: process.version,
      cpus: cpus().length,
      clients: CLIENTS,
      threads: THREADS,
      churn2: { clients: CHURN2_CLIENTS, threads: CHURN2_THREADS },
      tx: { clients: TX_CLIENTS, threads: TX_THREADS, poolSize: TX_POOL_SIZE },
      seconds: SECONDS,
      rounds: ROUNDS,
      scale: SCALE,
      connects: CONNECTS,
      idleClients: IDLE_CLIENTS,
      idleCycles: IDLE_CYCLES,
      poolSize: POOL_SIZE,
      orgCommand: PGVPD_ORG_COMMAND.join(' '),
      appCommand: PGVPD_APP_COMMAND.join(' '),
      txCommand: PGVPD_TX_COMMAND.join(' '),
      idleCommand: PGVPD_IDLE_COMMAND.join(' '),
      trees: { after: ROOT, ...(BEFORE ? { before: BEFORE } : {}) },
      commits: { after: commitOf(ROOT), ...(BEFORE ? { before: commitOf(BEFORE) } : {}) },
    };
    const summary = summarize(bench, latency, idle);
    summary.switchCost = switchCost;
    report(meta, bench, summary);
    const json = join(mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-')), 'org.json');
    writeFileSync(json, JSON.stringify({ meta, summary, samples: bench }, null, 2) + '\n');
    process.stdout.write(`results: ${json}\n`);
  } finally {
    stopServers();
    await db.end();
  }
}

main().then(
  () => {
    cleanup();
  },
  (err) => {
    log(`failed: ${err.stack ?? err}`);
    stopServers();
    cleanup();
    process.exitCode = 1;
  },
);
