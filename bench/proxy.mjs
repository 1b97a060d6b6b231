#!/usr/bin/env node
// Benchmark: what does the pgvpd proxy (app mode) cost in front of PostgreSQL?
//
// Against ONE throwaway PostgreSQL 15 cluster in ONE run (the machine is shared and noisy, so only
// ratios from the same run mean much), four ways in:
//   direct     PostgreSQL itself
//   pgbouncer  PgBouncer (/usr/sbin/pgbouncer), pool_mode = session, SCRAM with the role's verifier
//   raw pipe   bench/lib/raw-pipe.mjs: a Node net.createServer piping bytes both ways, no protocol
//              work; the ceiling for any proxy written in Node
//   pgvpd      the pgvpd proxy (PGVPD_COMMAND below), user bench_app.acme → role bench_app with the
//              signed context of tenant acme
// All TCP connections authenticate with scram-sha-256 (pg_hba), password in PGPASSWORD.
//
// Optional arms (environment):
//   pgvpd-before  PGVPD_BENCH_BEFORE=<tree>: the same pgvpd command run from another checkout's
//              built dist/ (e.g. a worktree of an earlier commit), so that one run measures two
//              builds side by side against the same raw pipe; PGVPD_BENCH_TREES=<name>=<tree>,...
//              adds such an arm pgvpd-<name> per entry (e.g. variants under test)
//   rawheavy   PGVPD_BENCH_RAWHEAVY=1: a reference, not a baseline (bench/lib/raw-pipe-heavy.mjs):
//              raw-pipe.mjs's exact pipe code inside a process that also runs a pgvpd proxy which
//              has served 3 sessions; it tells what pgvpd's process costs the same pipe code
//
// Measured:
//   1. Throughput, unthrottled: pgbench -n -S -c 8 -j 2 -T $PGVPD_BENCH_SECONDS (default 15),
//      simple and -M prepared, for $PGVPD_BENCH_ROUNDS rounds (default 3); each round runs every
//      target once per protocol, the order rotated by one target each round (no target always
//      follows the same one). Per round the ratios pgvpd/raw (target ≥ 0.95), pgbouncer/direct,
//      raw/direct; judged: the median of the per-round ratios (median TPS printed too).
//   2. Proxy CPU per transaction at a fixed rate: pgbench as above with -R <rate>, the same rate
//      for every proxy arm (raw, rawheavy, pgvpd, pgvpd-before), rotated likewise, so that CPU
//      per transaction does not follow each arm's own TPS (fewer transactions per wake-up cost
//      more each). The rate: $PGVPD_BENCH_RATE for both protocols, else per protocol
//      $PGVPD_BENCH_RATE_FRACTION (default 0.5) of the lowest median unthrottled TPS among those
//      arms, rounded down to 100; a run whose TPS fell more than 3% below the rate is flagged.
//      CPU: the process's threads' on-CPU time (/proc/<pid>/task/*/schedstat) over the run,
//      divided by its transactions. Per round pgvpd − raw, µs; judged: the median of those
//      (target ≤ 2 µs). The unthrottled runs' CPU per transaction is printed too (target pgvpd
//      ≤ 40 µs, the earlier absolute target).
//   3. Connect + select 1 + close with a pg Client, sequentially, the targets interleaved,
//      $PGVPD_BENCH_CONNECTS iterations (default 300) after 30 of warm-up: p50 and p90, with the
//      close and to the result of select 1. Target pgvpd p50 ≤ direct p50 + 1 ms (with the close).
//      For reference, the SQL side of pgvpd's handshake from one session of the control role:
//      pgvpd.issue_context and pgvpd.set_context against select 1, median of 200 each, and
//      set_context as the first statement of a fresh session against a fresh session's first
//      select 1, median of 50 each.
//   4. Proxy RSS (VmRSS of /proc/<pid>/status) freshly started, with 500 idle client sessions open
//      through it (each has run select 1), and after they closed. Target pgvpd ≤ 150 MB at 500.
//
// pgvpd is measured only when `npm run build` has produced dist/cli/main.js and the proxy passes
// a check (through it, bench_app.acme is bench_app with tenant acme); otherwise the baselines are
// measured and the reason is printed.
//
// Usage: npm run bench:proxy  (env: PGVPD_BENCH_SECONDS, PGVPD_BENCH_ROUNDS, PGVPD_BENCH_CONNECTS,
//                              PGVPD_BENCH_SESSIONS (default 500), PGVPD_BENCH_RATE,
//                              PGVPD_BENCH_RATE_FRACTION, PGVPD_BENCH_BEFORE, PGVPD_BENCH_TREES,
//                              PGVPD_BENCH_RAWHEAVY,
//                              PGVPD_BENCH_NODE_ARGS (node options for the Node arms),
//                              PGVPD_BENCH_THROUGHPUT_ONLY=1 (sections 1 and 2 only),
//                              PGVPD_PG_BIN, PGVPD_PGBENCH, PGVPD_PGBOUNCER)
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  cpuNs,
  memory,
  startServer,
  startPgbouncer as startSharedPgbouncer,
  stopServers,
} from './lib/servers.mjs';
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
import { createBenchDatabase } from './lib/pgbench.mjs';
import { commitOf, fmt, table, verdict } from './lib/report.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 15);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 3);
const CONNECTS = positiveInt(process.env.PGVPD_BENCH_CONNECTS, 300);
const SESSIONS = positiveInt(process.env.PGVPD_BENCH_SESSIONS, 500);
const CONNECT_WARMUP = 30;
const RATE = process.env.PGVPD_BENCH_RATE ? positiveInt(process.env.PGVPD_BENCH_RATE) : null;
const RATE_FRACTION = Number(process.env.PGVPD_BENCH_RATE_FRACTION ?? 0.5);
if (!(RATE_FRACTION > 0 && RATE_FRACTION <= 1)) {
  throw new Error(`PGVPD_BENCH_RATE_FRACTION: not in (0, 1]: ${RATE_FRACTION}`);
}
// Extra pgvpd arms: [name, checkout]; PGVPD_BENCH_BEFORE=<tree> is pgvpd-before,
// PGVPD_BENCH_TREES=<name>=<tree>,... adds pgvpd-<name> for each.
const EXTRA_TREES = [
  ...(process.env.PGVPD_BENCH_BEFORE ? [['pgvpd-before', process.env.PGVPD_BENCH_BEFORE]] : []),
  ...(process.env.PGVPD_BENCH_TREES ?? '')
    .split(',')
    .filter(Boolean)
    .map((spec) => {
      const eq = spec.indexOf('=');
      if (eq < 1) throw new Error(`PGVPD_BENCH_TREES: not <name>=<tree>: ${spec}`);
      return [`pgvpd-${spec.slice(0, eq)}`, spec.slice(eq + 1)];
    }),
];
const RAWHEAVY = Boolean(process.env.PGVPD_BENCH_RAWHEAVY);
const NODE_ARGS = process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
// For quick experiments: sections 1 and 2 only.
const THROUGHPUT_ONLY = Boolean(process.env.PGVPD_BENCH_THROUGHPUT_ONLY);
const CLIENTS = 8;
const THREADS = 2;
const SCALE = 10;
const DATABASE = 'pgvpd_bench';
const APP_ROLE = 'bench_app';
const PROXY_ROLE = 'bench_proxy';
const TENANT = 'acme';

// The pgvpd proxy's command line (run with this Node, cwd = the repository); {port}, {pgport} and
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

const TARGETS = {
  pgvpd: { target: 0.95, over: 'raw' },
  ...Object.fromEntries(EXTRA_TREES.map(([name]) => [name, { over: 'raw' }])),
  rawheavy: { over: 'raw' },
  pgbouncer: { over: 'direct' },
  raw: { over: 'direct' },
};
// The arms of the fixed-rate CPU measurement, and what each is compared with.
const CPU_ARMS = ['raw', 'rawheavy', 'pgvpd', ...EXTRA_TREES.map(([name]) => name)];
const CPU_TARGET_US = 40;
const CPU_OVER_RAW_TARGET_US = 2;
const CONNECT_TARGET_MS = 1;
const RSS_TARGET_MB = 150;

// ---------------------------------------------------------------------------------------------
// Long-running children: the proxies (process helpers and /proc readings in lib/servers.mjs)

function startPgbouncer(pgPort, scramVerifier) {
  return startSharedPgbouncer(pgPort, {
    database: DATABASE,
    user: APP_ROLE,
    verifier: scramVerifier,
    maxClientConn: SESSIONS + 100,
    poolSize: SESSIONS + 20,
  });
}

async function startRawPipe(pgPort) {
  const port = await freePort();
  return startServer(
    'raw pipe',
    process.execPath,
    [...NODE_ARGS, join(ROOT, 'bench/lib/raw-pipe.mjs'), String(port), '127.0.0.1', String(pgPort)],
    port,
  );
}

// The reference rawheavy: raw-pipe.mjs's code in a process that also runs pgvpd (of ROOT).
async function startRawHeavy(pgPort, controlUrl, controlPassword, appPassword) {
  const port = await freePort();
  return startServer(
    'rawheavy',
    process.execPath,
    [
      ...NODE_ARGS,
      join(ROOT, 'bench/lib/raw-pipe-heavy.mjs'),
      String(port),
      '127.0.0.1',
      String(pgPort),
      controlUrl,
      `${APP_ROLE}.${TENANT}`,
      appPassword,
      DATABASE,
      ROOT,
    ],
    port,
    { env: { PGPASSWORD: controlPassword } },
  );
}

// The control role's password goes in PGPASSWORD, not in the URL that shows in the process list.
// `tree`: the checkout whose dist/ runs (ROOT, or one of EXTRA_TREES).
async function startPgvpd(name, tree, pgPort, controlUrl, controlPassword) {
  if (!existsSync(join(tree, PGVPD_COMMAND[0]))) {
    throw new Error(`${join(tree, PGVPD_COMMAND[0])} does not exist (run npm run build there)`);
  }
  const port = await freePort();
  const fill = { '{port}': String(port), '{pgport}': String(pgPort), '{controlUrl}': controlUrl };
  const args = [...NODE_ARGS, ...PGVPD_COMMAND.map((a) => fill[a] ?? a)];
  return startServer(name, process.execPath, args, port, {
    cwd: tree,
    env: { PGPASSWORD: controlPassword },
  });
}

// ---------------------------------------------------------------------------------------------
// Database setup

async function setupDatabase(adminUrl) {
  const dbUrl = await createBenchDatabase(adminUrl, DATABASE, SCALE);

  const appPassword = randomBytes(12).toString('hex');
  const proxyPassword = randomBytes(12).toString('hex');
  const db = await connect(dbUrl);
  const version = (await db.query('show server_version')).rows[0].server_version;
  await db.query(`
    create role ${APP_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole
      password '${appPassword}';
    select pgvpd.add_app_role('${APP_ROLE}');
    create role ${PROXY_ROLE} login nosuperuser nobypassrls password '${proxyPassword}'
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
  return { db, version, appPassword, proxyPassword, verifier };
}

// ---------------------------------------------------------------------------------------------
// Measurements

function clientConfig(t, password) {
  return { host: '127.0.0.1', port: t.port, user: t.user, database: DATABASE, password };
}

// What a session through each target looks like; pgvpd's must carry tenant acme.
async function checkTarget(t, password) {
  const c = new pg.Client(clientConfig(t, password));
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query(
      `select current_user::text as role, pgvpd.current_tenant_id() as tenant,
              (select count(*) from pgbench_branches)::int as branches`,
    );
    const row = r.rows[0];
    const tenant = t.name.startsWith('pgvpd') ? TENANT : null;
    if (row.role !== APP_ROLE || row.tenant !== tenant || row.branches !== SCALE) {
      throw new Error(
        `${t.name}: expected role ${APP_ROLE}, tenant ${tenant}, ${SCALE} branches; got ${JSON.stringify(row)}`,
      );
    }
    return row;
  } finally {
    await c.end();
  }
}

/** One pgbench run; `rate` (transactions per second, all clients together) adds -R. */
async function pgbench(t, password, mode, seconds, rate = null) {
  const before = t.pid ? cpuNs(t.pid) : null;
  const { stdout } = await run(
    PGBENCH,
    [
      '-n',
      '-S',
      '-M',
      mode,
      '-c',
      `${CLIENTS}`,
      '-j',
      `${THREADS}`,
      '-T',
      `${seconds}`,
      ...(rate === null ? [] : ['-R', `${rate}`]),
      '-h',
      '127.0.0.1',
      '-p',
      `${t.port}`,
      '-U',
      t.user,
      DATABASE,
    ],
    { env: { PGPASSWORD: password } },
  );
  const after = t.pid ? cpuNs(t.pid) : null;
  const tps = stdout.match(/^tps = ([\d.]+) \(without initial connection time\)/m);
  const tx = stdout.match(/^number of transactions actually processed: (\d+)/m);
  const failed = stdout.match(/^number of failed transactions: (\d+)/m);
  if (!tps || !tx) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  if (failed && Number(failed[1]) !== 0) throw new Error(`pgbench reported failures:\n${stdout}`);
  const transactions = Number(tx[1]);
  const cpuUs = t.pid ? (after - before) / 1e3 : null;
  return {
    rate,
    tps: Number(tps[1]),
    transactions,
    cpuUs,
    cpuUsPerTx: cpuUs === null ? null : cpuUs / transactions,
  };
}

const MODES = ['simple', 'prepared'];

// The targets in round `round`'s order: rotated by one each round.
const rotated = (targets, round) => targets.map((_, k) => targets[(k + round) % targets.length]);

function logRun(label, t, r) {
  const cpu = r.cpuUsPerTx === null ? '' : `, proxy ${r.cpuUsPerTx.toFixed(1)} µs CPU/tx`;
  const rate = r.rate === null ? '' : ` at -R ${r.rate}${behind(r) ? ' (BEHIND the rate)' : ''}`;
  log(`${label} ${t.name.padEnd(12)} ${r.tps.toFixed(0)} tps${rate}${cpu}`);
}
const behind = (r) => r.rate !== null && r.tps < 0.97 * r.rate;

// 1. Unthrottled, every target, rotated.
async function runThroughput(targets, password) {
  log(`warm-up: pgbench -T 2 through each target`);
  for (const t of targets) await pgbench(t, password, 'simple', 2);
  const results = Object.fromEntries(
    MODES.map((m) => [m, Object.fromEntries(targets.map((t) => [t.name, []]))]),
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const order = rotated(targets, round - 1);
    log(`round ${round}/${ROUNDS} order: ${order.map((t) => t.name).join(', ')}`);
    for (const mode of MODES) {
      for (const t of order) {
        const r = await pgbench(t, password, mode, SECONDS);
        results[mode][t.name].push(r);
        logRun(`round ${round}/${ROUNDS} ${mode.padEnd(8)}`, t, r);
      }
    }
  }
  return results;
}

// The fixed rate per protocol: PGVPD_BENCH_RATE, else RATE_FRACTION of the lowest median
// unthrottled TPS among the CPU arms, rounded down to 100.
function fixedRates(arms, throughput) {
  return Object.fromEntries(
    MODES.map((mode) => {
      if (RATE !== null) return [mode, RATE];
      const lowest = Math.min(
        ...arms.map((t) => median(throughput[mode][t.name].map((r) => r.tps))),
      );
      return [mode, Math.max(100, Math.floor((lowest * RATE_FRACTION) / 100) * 100)];
    }),
  );
}

// 2. At a fixed rate, the CPU arms only, rotated.
async function runFixedRate(arms, password, rates) {
  const results = Object.fromEntries(
    MODES.map((m) => [m, Object.fromEntries(arms.map((t) => [t.name, []]))]),
  );
  for (let round = 1; round <= ROUNDS; round++) {
    const order = rotated(arms, round - 1);
    for (const mode of MODES) {
      for (const t of order) {
        const r = await pgbench(t, password, mode, SECONDS, rates[mode]);
        results[mode][t.name].push(r);
        logRun(`fixed rate round ${round}/${ROUNDS} ${mode.padEnd(8)}`, t, r);
      }
    }
  }
  return results;
}

// Connect + select 1 + close, one at a time, the targets interleaved; milliseconds. Also the time
// to the result of select 1 alone: pg's end() waits for the socket to close, which directly is
// when the backend has exited, but through a proxy is when the proxy closes the client's socket.
async function connectLatency(targets, password) {
  const ms = Object.fromEntries(targets.map((t) => [t.name, { total: [], toResult: [] }]));
  for (let i = 0; i < CONNECT_WARMUP + CONNECTS; i++) {
    // Rotated, so that no target always follows the same one (backends exit after their client).
    const order = targets.map((_, k) => targets[(i + k) % targets.length]);
    for (const t of order) {
      const t0 = process.hrtime.bigint();
      const c = new pg.Client(clientConfig(t, password));
      c.on('error', () => {});
      await c.connect();
      await c.query('select 1');
      const t1 = process.hrtime.bigint();
      await c.end();
      const t2 = process.hrtime.bigint();
      if (i >= CONNECT_WARMUP) {
        ms[t.name].total.push(Number(t2 - t0) / 1e6);
        ms[t.name].toResult.push(Number(t1 - t0) / 1e6);
      }
    }
  }
  return Object.fromEntries(
    Object.entries(ms).map(([name, { total, toResult }]) => [
      name,
      {
        n: total.length,
        p50: percentile(total, 50),
        p90: percentile(total, 90),
        mean: mean(total),
        toResultP50: percentile(toResult, 50),
        toResultP90: percentile(toResult, 90),
      },
    ]),
  );
}

// What the SQL side of a pgvpd handshake costs, from one session of the control role: the round
// trip of select 1, issue_context (what the proxy asks over its control connection) and
// set_context (what it runs on the client's session), median of CONTEXT_CALLS each, ms; and, as
// the proxy runs it, set_context as the first statement of FRESH_SESSIONS fresh sessions against
// the first select 1 of as many others.
const CONTEXT_CALLS = 200;
const FRESH_SESSIONS = 50;
const clientOf = (port) => ({ host: '127.0.0.1', port, database: DATABASE });
async function contextSqlCost(port, proxyPassword, appPassword) {
  const c = new pg.Client({ ...clientOf(port), user: PROXY_ROLE, password: proxyPassword });
  c.on('error', () => {});
  await c.connect();
  try {
    const time = async (fn) => {
      const t0 = process.hrtime.bigint();
      const r = await fn();
      return [Number(process.hrtime.bigint() - t0) / 1e6, r];
    };
    const out = { select1: [], issueContext: [], setContext: [] };
    // issue_context serves only registered application roles: the token is issued for a warm
    // session of the application role and set there, as the proxy does.
    const w = new pg.Client({ ...clientOf(port), user: APP_ROLE, password: appPassword });
    w.on('error', () => {});
    await w.connect();
    for (let i = 0; i < CONTEXT_CALLS + 20; i++) {
      const [a] = await time(() => c.query('select 1'));
      const [b, r] = await time(() =>
        c.query(`select pgvpd.issue_context($1, $2, null, '{}') as token`, [w.processID, TENANT]),
      );
      const [d] = await time(() => w.query('select pgvpd.set_context($1)', [r.rows[0].token]));
      if (i >= 20) {
        out.select1.push(a);
        out.issueContext.push(b);
        out.setContext.push(d);
      }
    }
    await w.end();
    // What the proxy really runs: set_context as the first statement of a fresh backend (which
    // loads pgcrypto and compiles the PL/pgSQL anew), against the first select 1 of another.
    const fresh = { firstSelect1: [], firstSetContext: [] };
    for (let i = 0; i < FRESH_SESSIONS; i++) {
      for (const kind of ['firstSelect1', 'firstSetContext']) {
        const f = new pg.Client({ ...clientOf(port), user: APP_ROLE, password: appPassword });
        f.on('error', () => {});
        await f.connect();
        try {
          if (kind === 'firstSelect1') {
            const [ms] = await time(() => f.query('select 1'));
            fresh[kind].push(ms);
          } else {
            const r = await c.query(`select pgvpd.issue_context($1, $2, null, '{}') as token`, [
              f.processID,
              TENANT,
            ]);
            const [ms] = await time(() =>
              f.query('select pgvpd.set_context($1)', [r.rows[0].token]),
            );
            fresh[kind].push(ms);
          }
        } finally {
          await f.end();
        }
      }
    }
    return Object.fromEntries(
      Object.entries({ ...out, ...fresh }).map(([k, xs]) => [k, median(xs)]),
    );
  } finally {
    await c.end();
  }
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

// RSS of a proxy with SESSIONS idle sessions through it (each has run select 1).
async function sessionsRss(t, password) {
  const clients = [];
  try {
    const batch = 25;
    for (let i = 0; i < SESSIONS; i += batch) {
      const opened = await Promise.all(
        Array.from({ length: Math.min(batch, SESSIONS - i) }, async () => {
          const c = new pg.Client(clientConfig(t, password));
          c.on('error', (err) => log(`${t.name} session: ${err.message}`));
          clients.push(c);
          await c.connect();
          await c.query('select 1');
          return c;
        }),
      );
      if (opened.length === 0) break;
    }
    await sleep(2000);
    const open = memory(t.pid);
    return { sessions: clients.length, ...open };
  } finally {
    await Promise.allSettled(clients.map((c) => c.end()));
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function summarize(targets, bench, fixed, rates, latency, rss) {
  const names = targets.map((t) => t.name);
  const summary = {
    tps: {},
    ratios: {},
    roundRatios: {},
    medianRoundRatios: {},
    cpuUsPerTx: {},
    rates,
    fixedRate: {},
    latency,
    rss,
    verdicts: {},
  };
  for (const mode of MODES) {
    const tps = Object.fromEntries(names.map((n) => [n, median(bench[mode][n].map((r) => r.tps))]));
    summary.tps[mode] = tps;
    summary.ratios[mode] = {};
    summary.roundRatios[mode] = {};
    summary.medianRoundRatios[mode] = {};
    for (const [name, def] of Object.entries(TARGETS)) {
      if (tps[name] === undefined) continue;
      const key = `${name}/${def.over}`;
      summary.ratios[mode][key] = tps[name] / tps[def.over];
      const perRound = bench[mode][name].map((r, i) => r.tps / bench[mode][def.over][i].tps);
      summary.roundRatios[mode][key] = perRound;
      summary.medianRoundRatios[mode][key] = median(perRound);
      if (def.target !== undefined) {
        summary.verdicts[`tps ${mode} ${key} ≥ ${def.target} (median of the rounds' ratios)`] =
          median(perRound) >= def.target;
      }
    }
    summary.cpuUsPerTx[mode] = Object.fromEntries(
      targets
        .filter((t) => t.pid)
        .map((t) => [t.name, median(bench[mode][t.name].map((r) => r.cpuUsPerTx))]),
    );
    if (summary.cpuUsPerTx[mode].pgvpd !== undefined) {
      summary.verdicts[`cpu ${mode} pgvpd ≤ ${CPU_TARGET_US} µs/tx (unthrottled)`] =
        summary.cpuUsPerTx[mode].pgvpd <= CPU_TARGET_US;
    }
    // At the fixed rate: per arm the median µs/tx and TPS, and per round its difference from raw.
    const f = {};
    for (const [name, xs] of Object.entries(fixed[mode])) {
      const overRaw = xs.map((r, i) => r.cpuUsPerTx - fixed[mode].raw[i].cpuUsPerTx);
      f[name] = {
        cpuUsPerTx: median(xs.map((r) => r.cpuUsPerTx)),
        perRound: xs.map((r) => r.cpuUsPerTx),
        tps: xs.map((r) => r.tps),
        behind: xs.filter(behind).length,
        overRaw: name === 'raw' ? null : overRaw,
        medianOverRaw: name === 'raw' ? null : median(overRaw),
      };
    }
    summary.fixedRate[mode] = f;
    if (f.pgvpd) {
      summary.verdicts[
        `cpu ${mode} at -R ${rates[mode]}: pgvpd − raw ≤ ${CPU_OVER_RAW_TARGET_US} µs/tx (median of the rounds)`
      ] = f.pgvpd.medianOverRaw <= CPU_OVER_RAW_TARGET_US;
    }
  }
  if (latency.pgvpd && latency.direct) {
    summary.verdicts[`connect p50 pgvpd ≤ direct + ${CONNECT_TARGET_MS} ms`] =
      latency.pgvpd.p50 <= latency.direct.p50 + CONNECT_TARGET_MS;
  }
  if (rss.pgvpd?.open) {
    summary.verdicts[`rss pgvpd with ${SESSIONS} sessions ≤ ${RSS_TARGET_MB} MB`] =
      rss.pgvpd.open.rssMb <= RSS_TARGET_MB;
  }
  return summary;
}

function report(meta, targets, bench, summary, skipped) {
  const names = targets.map((t) => t.name);
  const out = [
    '',
    `pgvpd proxy benchmark: ${meta.server}, PostgreSQL ${meta.version}, ${meta.pgbouncer}, Node ${process.version}, ${meta.cpus} CPUs`,
    `pgbench -n -S -c ${CLIENTS} -j ${THREADS} -T ${SECONDS} (scale ${SCALE}), ${ROUNDS} interleaved rounds, medians`,
    `load average at start ${meta.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}, ` +
      `at end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}; raw = the raw Node socket pipe`,
    ...Object.entries(meta.trees).map(
      ([name, tree]) => `${name}: ${tree} at ${meta.commits[name]}`,
    ),
    ...(names.includes('rawheavy')
      ? [
          "rawheavy (a reference, not the baseline): raw-pipe.mjs's code in a process that also runs pgvpd",
        ]
      : []),
  ];
  if (skipped) out.push('', `pgvpd NOT MEASURED: ${skipped}`);

  out.push(
    '',
    `1. TPS, unthrottled (${ROUNDS} rounds, the order rotated each round; judged: the median of the rounds' ratios)`,
    '',
  );
  const ratioHead = Object.entries(TARGETS)
    .filter(([n]) => names.includes(n))
    .map(([n, d]) => `${n}/${d.over}`);
  const tpsRows = MODES.map((mode) => {
    const r = summary.medianRoundRatios[mode];
    return [
      mode,
      ...names.map((n) => fmt(summary.tps[mode][n])),
      ...ratioHead.map((k) => {
        const name = k.split('/')[0];
        const target = TARGETS[name].target;
        return target === undefined
          ? `${r[k].toFixed(3)}×`
          : `${r[k].toFixed(3)}× (≥ ${target} ${verdict(r[k] >= target)})`;
      }),
    ];
  });
  out.push('   median TPS of each target; ratios: median of the per-round ratios', '');
  out.push(...table(['protocol', ...names, ...ratioHead], tpsRows));

  out.push('', 'TPS by round (and the ratios within each round, their median last):');
  for (const mode of MODES) {
    for (const n of names) {
      out.push(
        `  ${mode.padEnd(8)} ${n.padEnd(21)} ${bench[mode][n].map((r) => fmt(r.tps)).join(', ')}`,
      );
    }
    for (const k of ratioHead) {
      const xs = summary.roundRatios[mode][k];
      out.push(
        `  ${mode.padEnd(8)} ${k.padEnd(21)} ${xs.map((x) => `${x.toFixed(3)}×`).join(', ')}` +
          `  median ${summary.medianRoundRatios[mode][k].toFixed(3)}×` +
          `  (ratio of medians ${summary.ratios[mode][k].toFixed(3)}×)`,
      );
    }
  }

  const arms = CPU_ARMS.filter((n) => names.includes(n));
  out.push(
    '',
    `2. Proxy CPU per transaction at a fixed rate (pgbench -R, the same for every arm; ` +
      `on-CPU time of all the process's threads / transactions), µs`,
    '',
  );
  out.push(
    ...table(
      ['protocol', 'rate', ...arms, ...arms.filter((n) => n !== 'raw').map((n) => `${n} − raw`)],
      MODES.map((mode) => {
        const f = summary.fixedRate[mode];
        return [
          mode,
          `${summary.rates[mode]}/s`,
          ...arms.map((n) => fmt(f[n].cpuUsPerTx, 1)),
          ...arms
            .filter((n) => n !== 'raw')
            .map((n) =>
              n === 'pgvpd'
                ? `${fmt(f[n].medianOverRaw, 1)} (≤ ${CPU_OVER_RAW_TARGET_US} ${verdict(f[n].medianOverRaw <= CPU_OVER_RAW_TARGET_US)})`
                : fmt(f[n].medianOverRaw, 1),
            ),
        ];
      }),
    ),
  );
  out.push('', '   µs/tx by round (TPS reached), and the differences from raw within each round:');
  for (const mode of MODES) {
    const f = summary.fixedRate[mode];
    for (const n of arms) {
      out.push(
        `  ${mode.padEnd(8)} ${n.padEnd(21)} ` +
          f[n].perRound.map((x, i) => `${fmt(x, 1)} (${fmt(f[n].tps[i])})`).join(', ') +
          (f[n].behind ? `  ${f[n].behind} run(s) more than 3% BEHIND the rate` : ''),
      );
    }
    for (const n of arms.filter((x) => x !== 'raw')) {
      out.push(
        `  ${mode.padEnd(8)} ${`${n} − raw`.padEnd(21)} ` +
          f[n].overRaw.map((x) => fmt(x, 1)).join(', ') +
          `  median ${fmt(f[n].medianOverRaw, 1)}`,
      );
    }
  }

  const proxies = targets.filter((t) => t.pid).map((t) => t.name);
  out.push('', "   Unthrottled (section 1), median µs/tx (follows each arm's TPS):", '');
  out.push(
    ...table(
      ['protocol', ...proxies],
      MODES.map((mode) => [
        mode,
        ...proxies.map((n) => {
          const v = summary.cpuUsPerTx[mode][n];
          return n === 'pgvpd'
            ? `${fmt(v, 1)} (≤ ${CPU_TARGET_US} ${verdict(v <= CPU_TARGET_US)})`
            : fmt(v, 1);
        }),
      ]),
    ),
  );

  const lat = summary.latency;
  if (!meta.throughputOnly) {
    out.push(
      '',
      `3. Connect + select 1 + close, sequential, ${CONNECTS} iterations after ${CONNECT_WARMUP} warm-up, ms`,
      '',
    );
    out.push(
      ...table(
        [
          'target',
          'to result p50',
          'p90',
          '− direct',
          'with close p50',
          'p90',
          'mean',
          '− direct (p50)',
        ],
        names
          .filter((n) => lat[n])
          .map((n) => [
            n,
            fmt(lat[n].toResultP50, 2),
            fmt(lat[n].toResultP90, 2),
            n === 'direct' ? '' : fmt(lat[n].toResultP50 - lat.direct.toResultP50, 2),
            fmt(lat[n].p50, 2),
            fmt(lat[n].p90, 2),
            fmt(lat[n].mean, 2),
            n === 'direct'
              ? ''
              : `${fmt(lat[n].p50 - lat.direct.p50, 2)}` +
                (n === 'pgvpd'
                  ? ` (≤ ${CONNECT_TARGET_MS} ${verdict(lat[n].p50 <= lat.direct.p50 + CONNECT_TARGET_MS)})`
                  : ''),
          ]),
      ),
    );
    const sql = summary.contextSql;
    if (sql) {
      out.push(
        '',
        `   SQL side of a pgvpd handshake, one session of ${PROXY_ROLE}, median of ${CONTEXT_CALLS}: ` +
          `select 1 ${fmt(sql.select1, 2)} ms, issue_context ${fmt(sql.issueContext, 2)} ms, ` +
          `set_context ${fmt(sql.setContext, 2)} ms`,
        `   first statement of a fresh ${APP_ROLE} session, median of ${FRESH_SESSIONS}: ` +
          `select 1 ${fmt(sql.firstSelect1, 2)} ms, set_context ${fmt(sql.firstSetContext, 2)} ms`,
      );
    }

    out.push('', `4. Proxy memory (VmRSS; VmHWM = peak), MB`, '');
    out.push(
      ...table(
        ['proxy', 'fresh', `${SESSIONS} sessions`, 'after close', 'peak'],
        proxies
          .filter((n) => summary.rss[n]?.open)
          .map((n) => {
            const r = summary.rss[n];
            return [
              n,
              fmt(r.fresh.rssMb, 1),
              n === 'pgvpd'
                ? `${fmt(r.open?.rssMb, 1)} (≤ ${RSS_TARGET_MB} ${verdict(r.open?.rssMb <= RSS_TARGET_MB)})`
                : fmt(r.open?.rssMb, 1),
              fmt(r.closed?.rssMb, 1),
              fmt(r.closed?.hwmMb, 1),
            ];
          }),
      ),
    );
  }

  out.push('', 'Targets:');
  for (const [k, ok] of Object.entries(summary.verdicts)) out.push(`  ${verdict(ok)}  ${k}`);
  if (skipped) out.push('  (pgvpd not measured; no pgvpd targets checked)');
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const loadavgAtStart = loadavg();
  const cluster = await startCluster({
    authHost: 'scram-sha-256',
    conf: [`max_connections = ${SESSIONS + 100}`, `password_encryption = 'scram-sha-256'`],
  });
  const { db, version, appPassword, proxyPassword, verifier } = await setupDatabase(
    cluster.adminUrl,
  );
  try {
    const direct = { name: 'direct', port: cluster.port, user: APP_ROLE, pid: null };
    const bouncer = await startPgbouncer(cluster.port, verifier);
    const raw = await startRawPipe(cluster.port);
    const targets = [
      direct,
      { name: 'pgbouncer', port: bouncer.port, user: APP_ROLE, pid: bouncer.pid },
      { name: 'raw', port: raw.port, user: APP_ROLE, pid: raw.pid },
    ];
    let skipped = null;
    const controlUrl = `postgres://${PROXY_ROLE}@127.0.0.1:${cluster.port}/${DATABASE}`;
    const pgvpds = [['pgvpd', ROOT], ...EXTRA_TREES];
    for (const [name, tree] of pgvpds) {
      try {
        const proxy = await startPgvpd(name, tree, cluster.port, controlUrl, proxyPassword);
        const t = { name, port: proxy.port, user: `${APP_ROLE}.${TENANT}`, pid: proxy.pid, tree };
        await checkTarget(t, appPassword);
        targets.push(t);
      } catch (err) {
        if (name === 'pgvpd') skipped = err.message;
        log(`${name} skipped: ${err.message}`);
      }
    }
    if (RAWHEAVY && !skipped) {
      const heavy = await startRawHeavy(cluster.port, controlUrl, proxyPassword, appPassword);
      targets.push({ name: 'rawheavy', port: heavy.port, user: APP_ROLE, pid: heavy.pid });
    }
    for (const t of targets) {
      const row = await checkTarget(t, appPassword);
      log(`check ${t.name}: role ${row.role}, tenant ${row.tenant}, ${row.branches} branches`);
    }
    // Sections 3 and 4 leave out the reference rawheavy.
    const measured = targets.filter((t) => t.name !== 'rawheavy');
    const rss = {};
    for (const t of measured.filter((x) => x.pid)) rss[t.name] = { fresh: memory(t.pid) };

    log(
      `pgbench: ${MODES.length} protocols × ${targets.length} targets × ${ROUNDS} rounds × ${SECONDS} s`,
    );
    const bench = await runThroughput(targets, appPassword);
    const arms = CPU_ARMS.map((n) => targets.find((t) => t.name === n)).filter(Boolean);
    const rates = fixedRates(arms, bench);
    log(
      `fixed rate: ${MODES.map((m) => `${m} -R ${rates[m]}`).join(', ')}; ` +
        `${arms.map((t) => t.name).join(', ')} × ${ROUNDS} rounds × ${SECONDS} s`,
    );
    const fixed = await runFixedRate(arms, appPassword, rates);

    let latency = {};
    let contextSql = null;
    if (!THROUGHPUT_ONLY) {
      log(`connect + select 1 + close: ${CONNECT_WARMUP} + ${CONNECTS} per target`);
      latency = await connectLatency(measured, appPassword);
      contextSql = skipped ? null : await contextSqlCost(cluster.port, proxyPassword, appPassword);
    }

    // PgBouncer keeps its server connections after its clients leave (server_idle_timeout), so it
    // goes last; pgvpd first.
    const order = ['pgvpd', ...EXTRA_TREES.map(([name]) => name), 'raw', 'pgbouncer'];
    const proxies = measured
      .filter((x) => x.pid && !THROUGHPUT_ONLY)
      .sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    for (const t of proxies) {
      log(`${SESSIONS} idle sessions through ${t.name}`);
      rss[t.name].open = await sessionsRss(t, appPassword);
      await sleep(2000);
      rss[t.name].closed = memory(t.pid);
      log(
        `${t.name}: ${rss[t.name].open.rssMb.toFixed(1)} MB with ${rss[t.name].open.sessions} sessions, ` +
          `${rss[t.name].closed.rssMb.toFixed(1)} MB after close`,
      );
    }

    const meta = {
      date: new Date().toISOString(),
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
      scale: SCALE,
      connects: CONNECTS,
      sessions: SESSIONS,
      pgvpdCommand: PGVPD_COMMAND.join(' '),
      pgvpdSkipped: skipped,
      trees: Object.fromEntries(pgvpds),
      commits: Object.fromEntries(pgvpds.map(([name, tree]) => [name, commitOf(tree)])),
      rates,
      rateFraction: RATE === null ? RATE_FRACTION : null,
      throughputOnly: THROUGHPUT_ONLY,
    };
    const summary = { ...summarize(targets, bench, fixed, rates, latency, rss), contextSql };
    report(meta, targets, bench, summary, skipped);
    const json = join(mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-')), 'proxy.json');
    writeFileSync(
      json,
      JSON.stringify({ meta, summary, samples: bench, fixedRateSamples: fixed }, null, 2) + '\n',
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
