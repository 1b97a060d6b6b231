#!/usr/bin/env node
// Benchmark: app mode with pool_mode (issue 15). The username `bench_app.acme` names the role and
// the tenant as ever; with pool_mode the proxy authenticates the client itself (SCRAM against the
// role's own verifier, pgvpd.app_role_verifier over the control connection), pools backends per
// (database, role), logged in with SCRAM pass-through, and switches the tenant's context in per
// checkout. Without pool_mode every client has a dedicated backend (PostgreSQL authenticates it
// through the proxy).
//
// Against ONE throwaway PostgreSQL 15 cluster in ONE run (the machine is shared and noisy, so only
// ratios from the same run mean much); every TCP connection authenticates with scram-sha-256
// (pg_hba), the password in PGPASSWORD or the pg Client's options. Ways in, all as the login
// role bench_app (registered with pgvpd.add_app_role, a SCRAM password):
//   direct       PostgreSQL itself, user bench_app
//   pgbouncer    PgBouncer (/usr/sbin/pgbouncer), pool_mode = session, default_pool_size = 20,
//                SCRAM with bench_app's verifier from pg_authid in its auth file; user bench_app
//   app          the pgvpd proxy in app mode without pool_mode, with --upstream-spares 2
//                (PGVPD_APP_COMMAND): the dedicated pipe, one backend per client, authentication
//                relayed; user bench_app.acme
//   app-session  the proxy with --pool-mode session --pool-size 20 (PGVPD_SESSION_COMMAND)
//   app-tx       the proxy with --pool-mode transaction --pool-size 20 (PGVPD_TX_COMMAND)
//
// Parts, chosen with PGVPD_BENCH_PARTS (comma-separated; default all: churn,steady,connect):
//   churn    1. Connection churn: pgbench -n -S -C -c 8 -j 2 -T $PGVPD_BENCH_SECONDS (default 15),
//               a new SCRAM connection per transaction, through direct, pgbouncer, app,
//               app-session and app-tx. Target: app-session ≥ 0.90 × pgbouncer (median of the
//               per-round ratios); app-tx, app and direct for information.
//   steady   3. Steady state: pgbench -n -S -c 8 -j 2 without -C through app, app-session, app-tx
//               and pgbouncer. Target: app-session ≥ 0.95 × app (median of the per-round ratios).
//            Both in $PGVPD_BENCH_ROUNDS interleaved rounds (default 3; all runs of a round in one
//            order, rotated by one each round) after a 2 s warm-up of each run. For every run also:
//            the proxy's CPU (utime+stime of its process) per transaction (with -C: per churned
//            connection), PostgreSQL's CPU per transaction (the whole cluster, bench/lib/pg-cpu.mjs,
//            read 1.1 s after pgbench ends), pgbench's own CPU per transaction (reaped children of
//            this process) and the backends PostgreSQL started meanwhile (pg_stat_database.sessions).
//   connect  2 and 4. Connect + select 1 + close with a pg Client, one at a time, the targets
//               interleaved and rotated (as bench/proxy.mjs section 3), $PGVPD_BENCH_CONNECTS
//               iterations (default 300) after 30 of warm-up: p50 and p90 with the close and to the
//               result of select 1, the median of the per-iteration differences, each proxy's CPU per
//               connect, and where the time goes (the pg Client's protocol events: TCP, startup →
//               AuthenticationSASL, the server-first round trip, the client's proof (PBKDF2), the
//               proof's check → AuthenticationSASLFinal, → ReadyForQuery, select 1, close).
//               Targets: app-session p50 ≤ pgbouncer p50 + 0.5 ms; app p50 ≤ direct p50 + 1 ms
//               (both with the close). Also timed, as a reference: floor (bench/lib/node-floor.mjs,
//               user bench_app), a Node.js server doing the SCRAM handshake against the verifier
//               and answering select 1 with a canned row, no upstream: its p50 over PgBouncer's is
//               what the handshake in Node.js costs by itself. For reference too, the control
//               lookup a pooled login makes (pgvpd.app_role_verifier and proxy_mock_secret,
//               prepared, as the proxy sends it) against select $1::text on one bench_proxy
//               session, median of 200 each.
//
// Needs dist/ (npx tsc -p tsconfig.json). Before timing, each target is checked: the session's
// role, pgvpd.current_tenant_id() (acme through the proxies, none otherwise) and the 10 pgbench
// branches; through the pooled proxies also a second tenant (globex) right after, and whether its
// client got the first one's backend.
//
// Usage: npm run bench:app  (env: PGVPD_BENCH_PARTS, PGVPD_BENCH_SECONDS, PGVPD_BENCH_ROUNDS,
//                            PGVPD_BENCH_CONNECTS, PGVPD_BENCH_NODE_ARGS (node options for the
//                            proxies, e.g. --cpu-prof), PGVPD_PG_BIN, PGVPD_PGBENCH, PGVPD_PGBOUNCER)
// Quick check that it runs (figures meaningless):
//   PGVPD_BENCH_SECONDS=2 PGVPD_BENCH_ROUNDS=1 PGVPD_BENCH_CONNECTS=20 npm run bench:app
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
} from './lib/cluster.mjs';
import { clusterCpuTicks, postmasterPid } from './lib/pg-cpu.mjs';
import { backendsStarted, createBenchDatabase, lastLines, parsePgbench } from './lib/pgbench.mjs';
import { commitOf, fmt, medianOf, table, verdict } from './lib/report.mjs';
import {
  CLK_TCK,
  cpuNs,
  cpuTimes,
  reapedChildrenTicks,
  startFloor,
  startPgbouncer,
  startServer,
  stopServers,
} from './lib/servers.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ALL_PARTS = ['churn', 'steady', 'connect'];
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
const NODE_ARGS = process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const CONNECT_WARMUP = 30;
const WARMUP_SECONDS = 2;
const CLIENTS = 8;
const THREADS = 2;
const SCALE = 10;
const DATABASE = 'pgvpd_bench';
const APP_ROLE = 'bench_app';
const PROXY_ROLE = 'bench_proxy';
const TENANT = 'acme';
// A second tenant, for the check only: a pooled backend must switch to it.
const OTHER_TENANT = 'globex';
const POOL_SIZE = 20;
const UPSTREAM_SPARES = 2;
const CONTROL_CALLS = 200;

// The proxies' command lines (run with this Node, cwd = the repository); {port}, {pgport} and
// {controlUrl} (postgres://bench_proxy@127.0.0.1:<pgport>/pgvpd_bench) are filled in; the control
// role's password is in the child's PGPASSWORD.
const PGVPD_COMMAND = [
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
// The dedicated pipe with two spare connections (upstream_spares): a client takes one whose
// server process has already started.
const PGVPD_APP_COMMAND = [...PGVPD_COMMAND, '--upstream-spares', String(UPSTREAM_SPARES)];
const PGVPD_SESSION_COMMAND = [
  ...PGVPD_COMMAND,
  '--pool-mode',
  'session',
  '--pool-size',
  String(POOL_SIZE),
];
const PGVPD_TX_COMMAND = [
  ...PGVPD_COMMAND,
  '--pool-mode',
  'transaction',
  '--pool-size',
  String(POOL_SIZE),
];

// Targets (issue 15).
const CHURN_OVER_PGBOUNCER = 0.9;
const CONNECT_OVER_PGBOUNCER_MS = 0.5;
const STEADY_OVER_APP = 0.95;
const CONNECT_OVER_DIRECT_MS = 1;

// ---------------------------------------------------------------------------------------------
// Setup

async function setupDatabase(adminUrl) {
  const dbUrl = await createBenchDatabase(adminUrl, DATABASE, SCALE);

  const passwords = {
    app: randomBytes(12).toString('hex'),
    proxy: randomBytes(12).toString('hex'),
  };
  const db = await connect(dbUrl);
  const version = (await db.query('show server_version')).rows[0].server_version;
  await db.query(`
    create role ${APP_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole
      password '${passwords.app}';
    select pgvpd.add_app_role('${APP_ROLE}');
    create role ${PROXY_ROLE} login nosuperuser nobypassrls password '${passwords.proxy}'
      in role pgvpd_proxy;
    grant connect on database ${DATABASE} to ${APP_ROLE}, ${PROXY_ROLE};
    grant select, insert, update on pgbench_accounts, pgbench_branches, pgbench_tellers,
      pgbench_history to ${APP_ROLE};
  `);
  await db.query('vacuum analyze');
  const verifier = (
    await db.query(`select rolpassword from pg_authid where rolname = $1`, [APP_ROLE])
  ).rows[0].rolpassword;
  if (!verifier.startsWith('SCRAM-SHA-256$')) throw new Error(`not a SCRAM verifier: ${verifier}`);
  return { db, version, passwords, verifier };
}

async function startPgvpd(name, command, { pgPort, controlUrl, proxyPassword }) {
  if (!existsSync(join(ROOT, command[0]))) {
    throw new Error(`${join(ROOT, command[0])} does not exist (run npx tsc -p tsconfig.json)`);
  }
  const port = await freePort();
  const fill = { '{port}': String(port), '{pgport}': String(pgPort), '{controlUrl}': controlUrl };
  const args = [...NODE_ARGS, ...command.map((a) => fill[a] ?? a)];
  return startServer(name, process.execPath, args, port, {
    cwd: ROOT,
    env: { PGPASSWORD: proxyPassword },
  });
}

// ---------------------------------------------------------------------------------------------
// Checks

function clientConfig(t, user = t.user) {
  return { host: '127.0.0.1', port: t.port, user, database: DATABASE, password: t.password };
}

async function sessionSees(t, user) {
  const c = new pg.Client(clientConfig(t, user));
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query(
      `select current_user::text as role, pgvpd.current_tenant_id() as tenant,
              pg_backend_pid() as pid, (select count(*) from pgbench_branches)::int as branches`,
    );
    return r.rows[0];
  } finally {
    await c.end();
  }
}

/** The right role, tenant and rows; through a pooled proxy also a second tenant after the first. */
async function checkTarget(t) {
  const row = await sessionSees(t);
  if (row.role !== APP_ROLE || row.tenant !== t.tenant || row.branches !== SCALE) {
    throw new Error(
      `${t.name}: expected role ${APP_ROLE}, tenant ${t.tenant}, ${SCALE} branches; got ${JSON.stringify(row)}`,
    );
  }
  const check = { role: row.role, tenant: row.tenant, branches: row.branches };
  if (t.pooled) {
    // The release of the first session resets its backend after the client has gone.
    await sleep(200);
    const other = await sessionSees(t, `${APP_ROLE}.${OTHER_TENANT}`);
    if (other.role !== APP_ROLE || other.tenant !== OTHER_TENANT || other.branches !== SCALE) {
      throw new Error(
        `${t.name}: expected role ${APP_ROLE}, tenant ${OTHER_TENANT}, ${SCALE} branches; got ${JSON.stringify(other)}`,
      );
    }
    check.otherTenant = other.tenant;
    check.sameBackend = other.pid === row.pid;
  }
  return check;
}

// ---------------------------------------------------------------------------------------------
// pgbench runs

/** One pgbench run through `t`: TPS, and the CPU of the proxy, PostgreSQL and pgbench over it. */
async function measureRun(r, t, { db, pmPid, seconds }) {
  const startedBefore = await backendsStarted(db, DATABASE);
  const pgBefore = clusterCpuTicks(pmPid).ticks;
  const before = t.pid ? cpuTimes(t.pid) : null;
  const clientBefore = reapedChildrenTicks();
  const output = await run(
    PGBENCH,
    [
      '-n',
      '-S',
      ...(r.churn ? ['-C'] : []),
      '-c',
      `${CLIENTS}`,
      '-j',
      `${THREADS}`,
      '-T',
      `${seconds}`,
      '-h',
      '127.0.0.1',
      '-p',
      `${t.port}`,
      '-U',
      t.user,
      DATABASE,
    ],
    { env: { PGPASSWORD: t.password }, allowFail: true },
  );
  const after = t.pid ? cpuTimes(t.pid) : null;
  const clientCpuUs = ((reapedChildrenTicks() - clientBefore) * 1e6) / CLK_TCK;
  if (output.code !== 0) {
    throw new Error(`pgbench exited ${output.code}: ${lastLines(output.stderr + output.stdout)}`);
  }
  // Exiting backends are reaped (their CPU in the postmaster's cutime) and pg_stat_database is
  // flushed by then.
  await sleep(1100);
  const pgAfter = clusterCpuTicks(pmPid).ticks;
  const startedAfter = await backendsStarted(db, DATABASE);
  const p = parsePgbench(output);
  const us = (key) => (t.pid ? ((after[key] - before[key]) * 1e6) / CLK_TCK : null);
  const cpuUs = t.pid ? us('user') + us('system') : null;
  const pgCpuUs = ((pgAfter - pgBefore) * 1e6) / CLK_TCK;
  return {
    tps: p.tps,
    transactions: p.transactions,
    avgConnectMs: p.avgConnectMs,
    cpuUsPerTx: cpuUs === null ? null : cpuUs / p.transactions,
    userUsPerTx: cpuUs === null ? null : us('user') / p.transactions,
    systemUsPerTx: cpuUs === null ? null : us('system') / p.transactions,
    pgCpuUsPerTx: pgCpuUs / p.transactions,
    totalCpuUsPerTx: ((cpuUs ?? 0) + pgCpuUs) / p.transactions,
    clientCpuUsPerTx: clientCpuUs / p.transactions,
    backendsStarted: startedAfter - startedBefore,
  };
}

const FAILED_RUN = {
  failed: true,
  tps: null,
  transactions: null,
  avgConnectMs: null,
  cpuUsPerTx: null,
  userUsPerTx: null,
  systemUsPerTx: null,
  pgCpuUsPerTx: null,
  totalCpuUsPerTx: null,
  clientCpuUsPerTx: null,
  backendsStarted: null,
};

const KINDS = ['churn', 'steady'];
const CHURN_TARGETS = ['direct', 'pgbouncer', 'app', 'app-session', 'app-tx'];
const STEADY_TARGETS = ['app', 'app-session', 'app-tx', 'pgbouncer'];

function runsOf(parts) {
  return [
    ...(parts.has('churn')
      ? CHURN_TARGETS.map((name) => ({ kind: 'churn', name, churn: true }))
      : []),
    ...(parts.has('steady')
      ? STEADY_TARGETS.map((name) => ({ kind: 'steady', name, churn: false }))
      : []),
  ];
}

async function runPgbench(runs, targets, ctx) {
  log(`warm-up: pgbench -T ${WARMUP_SECONDS} of each run`);
  for (const r of runs) {
    try {
      await measureRun(r, targets[r.name], { ...ctx, seconds: WARMUP_SECONDS });
    } catch (err) {
      log(`warm-up ${r.kind} ${r.name} FAILED: ${err.message}`);
    }
  }
  const results = Object.fromEntries(KINDS.map((k) => [k, {}]));
  results.failures = [];
  for (const r of runs) results[r.kind][r.name] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // Rotated by one each round, so that no run always follows the same one.
    const order = runs.map((_, k) => runs[(k + round - 1) % runs.length]);
    log(`round ${round}/${ROUNDS} order: ${order.map((r) => `${r.kind} ${r.name}`).join(', ')}`);
    for (const r of order) {
      const t = targets[r.name];
      let x;
      try {
        x = await measureRun(r, t, { ...ctx, seconds: SECONDS });
      } catch (err) {
        // Recorded and reported with the proxy's last output; the other runs go on.
        const output = t.output?.().trim() || null;
        log(
          `round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.name.padEnd(11)} FAILED: ${err.message}`,
        );
        if (output) log(`${r.name}'s last output: ${output}`);
        results.failures.push({
          round,
          kind: r.kind,
          target: r.name,
          failure: err.message,
          output,
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
      ].filter(Boolean);
      log(
        `round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.name.padEnd(11)} ${x.tps.toFixed(0)} tps, ${extra.join(', ')}`,
      );
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Connect + select 1 + close

// The phases of one connect, from the pg Client's protocol events, in the order they happen.
const PHASES = [
  ['tcp', 'TCP connect'],
  ['toSasl', 'startup → AuthenticationSASL'],
  ['saslFirst', 'client-first → server-first'],
  ['clientProof', "client's proof (PBKDF2)"],
  ['proofCheck', 'proof → SASLFinal'],
  ['toReady', 'SASLFinal → ReadyForQuery'],
  ['query', 'select 1'],
  ['close', 'close'],
];

async function oneConnect(t) {
  const now = () => process.hrtime.bigint();
  const m = {};
  const t0 = now();
  const c = new pg.Client(clientConfig(t));
  c.on('error', () => {});
  const con = c.connection;
  // Registered before the Client's own listeners (attached in connect()), so they run first.
  con.once('connect', () => (m.tcp = now()));
  con.once('authenticationSASL', () => (m.sasl = now()));
  con.once('authenticationSASLContinue', () => (m.continue = now()));
  con.once('authenticationSASLFinal', () => (m.final = now()));
  con.once('readyForQuery', () => (m.ready = now()));
  const sendFinal = con.sendSCRAMClientFinalMessage.bind(con);
  con.sendSCRAMClientFinalMessage = (data) => {
    m.proof = now();
    sendFinal(data);
  };
  await c.connect();
  await c.query('select 1');
  const t1 = now();
  await c.end();
  const t2 = now();
  const ms = (a, b) => (a === undefined || b === undefined ? null : Number(b - a) / 1e6);
  return {
    total: ms(t0, t2),
    toResult: ms(t0, t1),
    phases: {
      tcp: ms(t0, m.tcp),
      toSasl: ms(m.tcp, m.sasl),
      saslFirst: ms(m.sasl, m.continue),
      clientProof: ms(m.continue, m.proof),
      proofCheck: ms(m.proof, m.final),
      toReady: ms(m.final, m.ready),
      query: ms(m.ready, t1),
      close: ms(t1, t2),
    },
  };
}

// One at a time, the targets interleaved and rotated (backends exit after their client; a pooled
// session's release runs after its client has gone). Each proxy is idle but for its own target's
// connections, so its CPU over the loop (on-CPU time of its threads, /proc/<pid>/task/*/schedstat)
// divided by the connects through it is its CPU per connect.
async function connectLatency(targets) {
  const samples = Object.fromEntries(targets.map((t) => [t.name, []]));
  const cpuBefore = Object.fromEntries(
    targets.filter((t) => t.pid).map((t) => [t.name, cpuNs(t.pid)]),
  );
  for (let i = 0; i < CONNECT_WARMUP + CONNECTS; i++) {
    const order = targets.map((_, k) => targets[(i + k) % targets.length]);
    for (const t of order) {
      const x = await oneConnect(t);
      if (i >= CONNECT_WARMUP) samples[t.name].push(x);
    }
  }
  const result = {};
  for (const t of targets) {
    const xs = samples[t.name];
    const total = xs.map((x) => x.total);
    const toResult = xs.map((x) => x.toResult);
    const cpuUsPerConnect = t.pid
      ? (cpuNs(t.pid) - cpuBefore[t.name]) / 1e3 / (CONNECT_WARMUP + CONNECTS)
      : null;
    result[t.name] = {
      n: xs.length,
      p50: percentile(total, 50),
      p90: percentile(total, 90),
      mean: total.reduce((a, b) => a + b, 0) / total.length,
      toResultP50: percentile(toResult, 50),
      toResultP90: percentile(toResult, 90),
      cpuUsPerConnect,
      phasesP50: Object.fromEntries(
        PHASES.map(([k]) => {
          const v = xs.map((x) => x.phases[k]).filter((y) => y !== null);
          return [k, v.length ? median(v) : null];
        }),
      ),
      // Means add up to the mean total (medians do not): where the time goes on average.
      phasesMean: Object.fromEntries(
        PHASES.map(([k]) => {
          const v = xs.map((x) => x.phases[k]).filter((y) => y !== null);
          return [k, v.length ? v.reduce((a, b) => a + b, 0) / v.length : null];
        }),
      ),
    };
  }
  // Paired: the median over the iterations of (a − b), both connects of the same iteration.
  const paired = (a, b, key = 'total') =>
    samples[a] && samples[b] ? median(samples[a].map((x, i) => x[key] - samples[b][i][key])) : null;
  return { targets: result, paired, samples };
}

/**
 * The control lookup of a pooled login, as the proxy sends it (prepared, the role its parameter),
 * against a prepared select $1::text, on one session of the control role; medians in ms.
 */
async function controlLookupCost(port, proxyPassword) {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    database: DATABASE,
    user: PROXY_ROLE,
    password: proxyPassword,
  });
  c.on('error', () => {});
  await c.connect();
  try {
    const lookup = {
      name: 'bench_app_role_verifier',
      text: 'select v.verifier, v.problem, pgvpd.proxy_mock_secret() as mock from pgvpd.app_role_verifier($1::text) v',
      values: [APP_ROLE],
    };
    const floor = { name: 'bench_select_text', text: 'select $1::text as x', values: [APP_ROLE] };
    const found = await c.query(lookup);
    if (!found.rows[0]?.verifier) {
      throw new Error(`app_role_verifier found no verifier: ${JSON.stringify(found.rows[0])}`);
    }
    await c.query(floor);
    const times = { lookup: [], floor: [] };
    for (let i = 0; i < CONTROL_CALLS; i++) {
      for (const [k, q] of i % 2
        ? [
            ['lookup', lookup],
            ['floor', floor],
          ]
        : [
            ['floor', floor],
            ['lookup', lookup],
          ]) {
        const t0 = process.hrtime.bigint();
        await c.query(q);
        times[k].push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }
    return { n: CONTROL_CALLS, lookupMs: median(times.lookup), selectMs: median(times.floor) };
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Summary and report

const signed = (n, digits = 2) =>
  n === null || n === undefined || Number.isNaN(n)
    ? '–'
    : `${n >= 0 ? '+' : '−'}${fmt(Math.abs(n), digits)}`;

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
];

// Ratios of TPS: [kind, numerator, denominator, target or undefined].
const ALL_RATIOS = [
  ['churn', 'app-session', 'pgbouncer', CHURN_OVER_PGBOUNCER],
  ['churn', 'app-tx', 'pgbouncer', undefined],
  ['churn', 'app', 'pgbouncer', undefined],
  ['churn', 'app-session', 'app', undefined],
  ['churn', 'app-session', 'direct', undefined],
  ['churn', 'pgbouncer', 'direct', undefined],
  ['steady', 'app-session', 'app', STEADY_OVER_APP],
  ['steady', 'app-tx', 'app', undefined],
  ['steady', 'pgbouncer', 'app', undefined],
  ['steady', 'app-session', 'pgbouncer', undefined],
];

function summarize(bench, latency, control) {
  const summary = Object.fromEntries(FIGURES.map((f) => [f, {}]));
  for (const kind of KINDS) {
    for (const f of FIGURES) summary[f][kind] = {};
    for (const [name, xs] of Object.entries(bench[kind])) {
      for (const f of FIGURES) summary[f][kind][name] = medianOf(xs.map((x) => x[f]));
    }
  }
  summary.ratios = {};
  for (const [kind, a, b, target] of ALL_RATIOS) {
    if (!bench[kind][a] || !bench[kind][b]) continue;
    const rounds = bench[kind][a].map((x, i) =>
      x.tps === null || bench[kind][b][i].tps === null ? null : x.tps / bench[kind][b][i].tps,
    );
    summary.ratios[`${kind} ${a}/${b}`] = {
      rounds,
      median: medianOf(rounds),
      ofMedians: summary.tps[kind][a] / summary.tps[kind][b],
      target: target ?? null,
    };
  }
  summary.latency = latency
    ? {
        targets: latency.targets,
        pairedMs: {
          'app-session − pgbouncer': latency.paired('app-session', 'pgbouncer'),
          'app-tx − pgbouncer': latency.paired('app-tx', 'pgbouncer'),
          'app − direct': latency.paired('app', 'direct'),
          'app − direct, to result': latency.paired('app', 'direct', 'toResult'),
          'app-session − app': latency.paired('app-session', 'app'),
          'floor − pgbouncer': latency.paired('floor', 'pgbouncer'),
          'app-session − floor': latency.paired('app-session', 'floor'),
        },
      }
    : null;
  summary.control = control;

  // The issue's four targets.
  const ratio = (key) => summary.ratios[key]?.median ?? null;
  const lat = summary.latency?.targets;
  const p50Diff = (a, b) => (lat?.[a] && lat?.[b] ? lat[a].p50 - lat[b].p50 : null);
  const churn = ratio('churn app-session/pgbouncer');
  const steady = ratio('steady app-session/app');
  const overBouncer = p50Diff('app-session', 'pgbouncer');
  const overDirect = p50Diff('app', 'direct');
  summary.targets = [
    {
      n: 1,
      what: `churn TPS, app-session / pgbouncer ≥ ${CHURN_OVER_PGBOUNCER}× (median of rounds)`,
      value: churn,
      ok: churn === null ? null : churn >= CHURN_OVER_PGBOUNCER,
    },
    {
      n: 2,
      what: `connect + select 1 + close p50, app-session ≤ pgbouncer + ${CONNECT_OVER_PGBOUNCER_MS} ms`,
      value: overBouncer,
      ok: overBouncer === null ? null : overBouncer <= CONNECT_OVER_PGBOUNCER_MS,
    },
    {
      n: 3,
      what: `steady TPS, app-session / app ≥ ${STEADY_OVER_APP}× (median of rounds)`,
      value: steady,
      ok: steady === null ? null : steady >= STEADY_OVER_APP,
    },
    {
      n: 4,
      what: `connect + select 1 + close p50, app (dedicated) ≤ direct + ${CONNECT_OVER_DIRECT_MS} ms`,
      value: overDirect,
      ok: overDirect === null ? null : overDirect <= CONNECT_OVER_DIRECT_MS,
    },
  ];
  return summary;
}

function report(meta, bench, summary) {
  const out = [
    '',
    `pgvpd app mode with pool_mode (issue 15): ${meta.server}, PostgreSQL ${meta.version}, ${meta.pgbouncer}, Node ${meta.node}, ${meta.cpus} CPUs`,
    `${ROOT} at ${meta.commit}; parts ${meta.parts.join(',')}; pgbench -n -S -c ${CLIENTS} -j ${THREADS} -T ${SECONDS} (scale ${SCALE}), SCRAM, ` +
      `${ROUNDS} interleaved rounds; ${CONNECTS} connects per target`,
    ...(meta.commitAtEnd !== meta.commit
      ? [`NOTE: the tree changed during the run: ${meta.commitAtEnd} at the end`]
      : []),
    `load average at start ${meta.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}, ` +
      `at end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
    `checks: ${Object.entries(meta.checks)
      .map(
        ([n, c]) =>
          `${n} ${c.role}/${c.tenant ?? '-'}` +
          (c.otherTenant
            ? ` then ${c.otherTenant} (${c.sameBackend ? 'same backend' : 'another backend'})`
            : ''),
      )
      .join('; ')}`,
  ];
  const s = (f, kind, n, digits = 0) => fmt(summary[f][kind][n], digits);
  const ratioText = (key) => {
    const r = summary.ratios[key];
    if (!r) return '–';
    const rounds = r.rounds.map((x) => (x === null ? 'failed' : x.toFixed(3))).join(', ');
    const judged =
      r.target === null
        ? ''
        : ` (≥ ${r.target} ${verdict(r.median === null ? null : r.median >= r.target)})`;
    return `${fmt(r.median, 3)}×${judged} [rounds ${rounds}; ratio of medians ${fmt(r.ofMedians, 3)}×]`;
  };
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
  const rows = (kind) =>
    Object.keys(bench[kind]).map((n) => [
      n,
      s('tps', kind, n),
      s('avgConnectMs', kind, n, 2),
      summary.cpuUsPerTx[kind][n] === null
        ? '–'
        : `${s('cpuUsPerTx', kind, n, 1)} (${s('userUsPerTx', kind, n)} / ${s('systemUsPerTx', kind, n)})`,
      s('pgCpuUsPerTx', kind, n, 1),
      s('totalCpuUsPerTx', kind, n, 1),
      s('clientCpuUsPerTx', kind, n, 1),
      s('backendsStarted', kind, n),
    ]);

  if (Object.keys(bench.churn).length > 0) {
    out.push(
      '',
      `1. Connection churn: pgbench -n -S -C -c ${CLIENTS} -j ${THREADS} (a new SCRAM connection per transaction), medians`,
      '',
      ...table(head('conn'), rows('churn')),
      '',
      ...ALL_RATIOS.filter(([k]) => k === 'churn').map(
        ([k, a, b]) => `   ${a}/${b} ${ratioText(`${k} ${a}/${b}`)}`,
      ),
    );
  }
  if (Object.keys(bench.steady).length > 0) {
    out.push(
      '',
      `3. Steady state: pgbench -n -S -c ${CLIENTS} -j ${THREADS} without -C, medians`,
      '',
      ...table(head('tx'), rows('steady')),
      '',
      ...ALL_RATIOS.filter(([k]) => k === 'steady').map(
        ([k, a, b]) => `   ${a}/${b} ${ratioText(`${k} ${a}/${b}`)}`,
      ),
    );
  }
  const lat = summary.latency;
  if (lat) {
    const d = lat.targets.direct;
    out.push(
      '',
      `2, 4. Connect + select 1 + close, pg Client, sequential, targets interleaved, ${CONNECTS} iterations after ${CONNECT_WARMUP} warm-up, ms`,
      '',
      ...table(
        [
          'target',
          'p50',
          'p90',
          'mean',
          'p50 − direct',
          'to result p50',
          'p90',
          'to result − direct',
          'proxy CPU µs/connect',
        ],
        Object.entries(lat.targets).map(([n, l]) => [
          n,
          fmt(l.p50, 2),
          fmt(l.p90, 2),
          fmt(l.mean, 2),
          n === 'direct' || !d ? '' : signed(l.p50 - d.p50),
          fmt(l.toResultP50, 2),
          fmt(l.toResultP90, 2),
          n === 'direct' || !d ? '' : signed(l.toResultP50 - d.toResultP50),
          fmt(l.cpuUsPerConnect, 0),
        ]),
      ),
      '',
      `   paired (median over iterations of the difference, ms): ` +
        Object.entries(lat.pairedMs)
          .map(([k, v]) => `${k} ${signed(v)}`)
          .join('; '),
      '',
      "   Where the time goes (each phase, p50 / mean, ms; from the pg Client's protocol events; the means add up to the mean total):",
      '',
      ...table(
        ['phase', ...Object.keys(lat.targets)],
        [
          ...PHASES.map(([k, label]) => [
            label,
            ...Object.values(lat.targets).map(
              (l) => `${fmt(l.phasesP50[k], 2)} / ${fmt(l.phasesMean[k], 2)}`,
            ),
          ]),
          [
            'total',
            ...Object.values(lat.targets).map((l) => `${fmt(l.p50, 2)} / ${fmt(l.mean, 2)}`),
          ],
        ],
      ),
      '   (a server that sends SASLFinal, AuthenticationOk and ReadyForQuery together, as PgBouncer and the pooled',
      '   proxy do, has its work after the proof, checkout included, in "proof → SASLFinal")',
    );
  }
  if (summary.control) {
    const c = summary.control;
    out.push(
      '',
      `   The control lookup of a pooled login (pgvpd.app_role_verifier + proxy_mock_secret, prepared), one bench_proxy session, median of ${c.n}: ` +
        `${fmt(c.lookupMs, 3)} ms against ${fmt(c.selectMs, 3)} ms for select $1::text`,
    );
  }
  if (bench.failures.length > 0) {
    out.push('', `FAILED runs (${bench.failures.length}), left out of the medians:`);
    for (const f of bench.failures)
      out.push(`  round ${f.round} ${f.kind} ${f.target}: ${f.failure}`);
  }
  out.push(
    '',
    'Targets (issue 15):',
    '',
    ...table(
      ['#', 'target', 'figure', 'verdict'],
      summary.targets.map((t) => [
        t.n,
        t.what,
        t.value === null
          ? '–'
          : t.n === 1 || t.n === 3
            ? `${fmt(t.value, 3)}×`
            : `${signed(t.value)} ms`,
        verdict(t.ok),
      ]),
    ),
    '',
  );
  process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(join(ROOT, 'dist/cli/main.js'))) {
    throw new Error('dist/cli/main.js does not exist (run npx tsc -p tsconfig.json)');
  }
  const loadavgAtStart = loadavg();
  // The tree's commit when the run starts: the database is set up from its sql/ and the proxies
  // load its dist/ now (another engineer's commit during the run is reported at the end).
  const commitAtStart = commitOf(ROOT);
  const cluster = await startCluster({
    authHost: 'scram-sha-256',
    conf: [`max_connections = 300`, `password_encryption = 'scram-sha-256'`],
  });
  const pmPid = postmasterPid(join(cluster.dir, 'data'));
  const { db, version, passwords, verifier } = await setupDatabase(cluster.adminUrl);
  try {
    const controlUrl = `postgres://${PROXY_ROLE}@127.0.0.1:${cluster.port}/${DATABASE}`;
    const options = { pgPort: cluster.port, controlUrl, proxyPassword: passwords.proxy };
    const asRole = { user: APP_ROLE, password: passwords.app, tenant: null, pooled: false };
    const asTenant = { user: `${APP_ROLE}.${TENANT}`, password: passwords.app, tenant: TENANT };
    const bouncer = await startPgbouncer(cluster.port, {
      database: DATABASE,
      user: APP_ROLE,
      verifier,
      poolSize: POOL_SIZE,
    });
    const app = await startPgvpd('pgvpd app (dedicated)', PGVPD_APP_COMMAND, options);
    const session = await startPgvpd('pgvpd app (pool session)', PGVPD_SESSION_COMMAND, options);
    const tx = await startPgvpd('pgvpd app (pool transaction)', PGVPD_TX_COMMAND, options);
    const server = (name, s, who, extra = {}) => ({
      name,
      port: s.port,
      pid: s.pid ?? null,
      output: s.output ?? null,
      ...who,
      ...extra,
    });
    const targets = {
      direct: server('direct', { port: cluster.port }, asRole),
      pgbouncer: server('pgbouncer', bouncer, asRole),
      app: server('app', app, asTenant, { pooled: false }),
      'app-session': server('app-session', session, asTenant, { pooled: true }),
      'app-tx': server('app-tx', tx, asTenant, { pooled: true }),
    };
    const checks = {};
    for (const t of Object.values(targets)) {
      checks[t.name] = await checkTarget(t);
      const c = checks[t.name];
      log(
        `check ${t.name}: role ${c.role}, tenant ${c.tenant}, ${c.branches} branches` +
          (c.otherTenant
            ? `; then tenant ${c.otherTenant} on ${c.sameBackend ? 'the same' : 'another'} backend`
            : ''),
      );
    }

    const runs = runsOf(PARTS);
    let bench = { churn: {}, steady: {}, failures: [] };
    if (runs.length > 0) {
      log(`pgbench: ${runs.length} runs × ${ROUNDS} rounds × ${SECONDS} s`);
      bench = await runPgbench(runs, targets, { db, pmPid });
    }
    let latency = null;
    let control = null;
    if (PARTS.has('connect')) {
      log(`connect + select 1 + close: ${CONNECT_WARMUP} + ${CONNECTS} per target`);
      const floor = await startFloor(APP_ROLE, verifier, NODE_ARGS);
      latency = await connectLatency([
        ...Object.values(targets),
        server('floor', floor, asRole, { pooled: false }),
      ]);
      control = await controlLookupCost(cluster.port, passwords.proxy);
    }

    const meta = {
      date: new Date().toISOString(),
      parts: ALL_PARTS.filter((p) => PARTS.has(p)),
      loadavgAtStart,
      loadavgAtEnd: loadavg(),
      server: cluster.server,
      version,
      pgbouncer: bouncer.version,
      node: process.version,
      cpus: cpus().length,
      clients: CLIENTS,
      threads: THREADS,
      seconds: SECONDS,
      rounds: ROUNDS,
      connects: CONNECTS,
      scale: SCALE,
      poolSize: POOL_SIZE,
      commands: {
        app: PGVPD_APP_COMMAND.join(' '),
        'app-session': PGVPD_SESSION_COMMAND.join(' '),
        'app-tx': PGVPD_TX_COMMAND.join(' '),
      },
      tree: ROOT,
      commit: commitAtStart,
      commitAtEnd: commitOf(ROOT),
      checks,
    };
    const summary = summarize(bench, latency, control);
    report(meta, bench, summary);
    const json = join(mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-')), 'app-pool.json');
    writeFileSync(
      json,
      JSON.stringify(
        { meta, summary, samples: { ...bench, connects: latency?.samples ?? null } },
        null,
        2,
      ) + '\n',
    );
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
