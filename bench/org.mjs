#!/usr/bin/env node
// Benchmark: the pgvpd proxy in org mode (users authenticated by the proxy against the catalog,
// pooled connect_as sessions) against direct PostgreSQL, PgBouncer and the app-mode proxy.
//
// Against ONE throwaway PostgreSQL 15 cluster in ONE run (the machine is shared and noisy, so only
// ratios from the same run mean much); every TCP connection authenticates with scram-sha-256
// (pg_hba), the password in PGPASSWORD or the pg Client's options. Ways in:
//   direct     PostgreSQL itself, as the connect_as role bench_org
//   pgbouncer  PgBouncer (/usr/sbin/pgbouncer), pool_mode = session, default_pool_size = 20,
//              SCRAM with bench_org's verifier from pg_authid in its auth file; user bench_org
//   org        the pgvpd proxy in org mode (PGVPD_ORG_COMMAND below): user alice of the org whose
//              database name is bench-org (shared placement, so its target database is the
//              catalog's, pgvpd_bench), SCRAM against the catalog's verifier, then a pooled
//              session of the connect_as role bench_org with a fresh signed context (tenant = the
//              org's id, user alice); pool_size 20 (the default)
//   app        the pgvpd proxy in app mode (PGVPD_APP_COMMAND), user bench_app.acme, as in
//              bench/proxy.mjs: authentication relayed, one backend per client connection
//   nocontext  a reference: the org-mode proxy as built, with its per-checkout context step taken
//              out (bench/lib/org-without-context.mjs): no issue_context, no set_context, so
//              no tenant; the same command line as org otherwise
//   floor      a reference, not a proxy (bench/lib/node-floor.mjs): a Node.js server that
//              authenticates alice with the same SCRAM code and verifier as org mode and answers
//              every query with a canned row, with no upstream, pool or context at all
//
// Measured:
//   1. Connection churn: pgbench -n -S -C -c 8 -j 2 -T $PGVPD_BENCH_SECONDS (default 15), a new
//      connection (with SCRAM) for every transaction, through direct, pgbouncer and org; median
//      TPS over $PGVPD_BENCH_ROUNDS interleaved rounds (default 3). Targets: org ≥ 1.6 × direct
//      and ≥ 0.95 × pgbouncer. For reference also through app (a new backend per connection
//      behind the proxy's relayed authentication and context handshake), nocontext (what the
//      signed context costs) and floor (what a Node.js server reaches when it does nothing but
//      the handshake); no target.
//   2. Steady state: pgbench -n -S -c 8 -j 2 -T $PGVPD_BENCH_SECONDS (no -C) through org (its
//      pooled session lent to each client) and app (a passthrough pipe after the handshake), in
//      the same rounds; median TPS. Target: org ≥ 0.95 × app.
//   For each pgbench run also: the proxy's CPU (utime+stime of its process) per transaction, and
//   the backends PostgreSQL started meanwhile (pg_stat_database.sessions, before and after).
//   3. SCRAM connect latency: a pg Client connects (SCRAM) and ends, one at a time, the targets
//      direct, pgbouncer and org interleaved and rotated, $PGVPD_BENCH_CONNECTS iterations
//      (default 300) after 30 of warm-up: p50 and p99 of the connect (to ReadyForQuery) and of
//      connect + close.
//
// Needs `npm run build` (dist/cli/main.js, dist/proxy/auth/scram-verifier.js). Before timing it checks
// every target: the session's role, pgvpd.current_tenant_id() (the org's id through org, acme
// through app, none otherwise) and the 10 pgbench branches.
//
// Usage: npm run bench:org  (env: PGVPD_BENCH_SECONDS, PGVPD_BENCH_ROUNDS, PGVPD_BENCH_CONNECTS,
//                            PGVPD_BENCH_BEFORE, PGVPD_PG_BIN, PGVPD_PGBENCH, PGVPD_PGBOUNCER)
// Before/after in one run: PGVPD_BENCH_BEFORE=<tree> (another checkout with its dist/ built, e.g. a
// worktree of an earlier commit) adds org-before and app-before, the same commands run from that
// tree, to the churn and steady-state runs; ratios org/org-before, app/app-before and the
// before arms' own ratios are printed. The runs' order is rotated by one each round.
// For manual runs: PGVPD_BENCH_HOLD=1 sets everything up, prints a pgbench line per target and
// waits for Ctrl-C; PGVPD_BENCH_NODE_ARGS adds node options to the proxies and the floor (e.g. --cpu-prof).
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { spawnSync } from 'node:child_process';
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
  startCluster,
  tempDir,
  withDatabase,
} from './lib/cluster.mjs';
import { CLK_TCK, cpuTimes, startPgbouncer, startServer, stopServers } from './lib/servers.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 15);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 3);
const CONNECTS = positiveInt(process.env.PGVPD_BENCH_CONNECTS, 300);
const CONNECT_WARMUP = 30;
const WARMUP_SECONDS = 2;
const CLIENTS = 8;
const THREADS = 2;
const SCALE = 10;
const DATABASE = 'pgvpd_bench';
const APP_ROLE = 'bench_app';
const PROXY_ROLE = 'bench_proxy';
const ORG_ROLE = 'bench_org';
const ORG_DATABASE = 'bench-org';
const ORG_USER = 'alice';
const TENANT = 'acme';
const POOL_SIZE = 20;
const BEFORE = process.env.PGVPD_BENCH_BEFORE || null;

// The proxies' command lines (run with this Node, cwd = the repository); {port}, {pgport},
// {controlUrl} (postgres://bench_proxy@127.0.0.1:<pgport>/pgvpd_bench) and {passfile} are filled
// in; the control role's password is in the child's PGPASSWORD.
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

const CHURN_OVER_DIRECT = 1.6;
const CHURN_OVER_PGBOUNCER = 0.95;
const STEADY_OVER_APP = 0.95;

// ---------------------------------------------------------------------------------------------
// Setup

async function setupDatabase(adminUrl) {
  const admin = await connect(adminUrl);
  await admin.query(`create database ${DATABASE}`);
  await admin.end();
  const dbUrl = withDatabase(adminUrl, DATABASE);
  log(`installing sql/setup.sql into ${DATABASE}`);
  await run('psql', [
    '-X',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
    '-d',
    dbUrl,
    '-f',
    join(ROOT, 'sql/setup.sql'),
  ]);
  log(`pgbench -i -s ${SCALE}`);
  await run(PGBENCH, ['-i', '-q', '-s', String(SCALE), dbUrl]);

  const { makeVerifier } = await import(
    pathToFileURL(join(ROOT, 'dist/proxy/auth/scram-verifier.js')).href
  );
  const passwords = {
    app: randomBytes(12).toString('hex'),
    proxy: randomBytes(12).toString('hex'),
    org: randomBytes(12).toString('hex'),
    alice: randomBytes(12).toString('hex'),
  };
  const db = await connect(dbUrl);
  const version = (await db.query('show server_version')).rows[0].server_version;
  await db.query(`
    create role ${APP_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole
      password '${passwords.app}';
    select pgvpd.add_app_role('${APP_ROLE}');
    create role ${PROXY_ROLE} login nosuperuser nobypassrls password '${passwords.proxy}'
      in role pgvpd_proxy;
    create role ${ORG_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole noinherit
      password '${passwords.org}';
    grant connect on database ${DATABASE} to ${APP_ROLE}, ${PROXY_ROLE}, ${ORG_ROLE};
    grant select, insert, update on pgbench_accounts, pgbench_branches, pgbench_tellers,
      pgbench_history to ${APP_ROLE}, ${ORG_ROLE};
  `);
  const orgId = (await db.query(`select pgvpd.org_create('Bench', $1)::text as id`, [ORG_DATABASE]))
    .rows[0].id;
  const orgVerifier = makeVerifier(passwords.alice);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgId, ORG_USER, orgVerifier, ORG_ROLE]);
  await db.query('vacuum analyze');
  const verifier = (
    await db.query(`select rolpassword from pg_authid where rolname = $1`, [ORG_ROLE])
  ).rows[0].rolpassword;
  if (!verifier.startsWith('SCRAM-SHA-256$')) throw new Error(`not a SCRAM verifier: ${verifier}`);
  return { db, version, passwords, orgId, verifier, orgVerifier };
}

// `tree`: the checkout whose files run (ROOT, or PGVPD_BENCH_BEFORE's).
async function startPgvpd(
  name,
  command,
  { pgPort, controlUrl, proxyPassword, passfile },
  tree = ROOT,
) {
  if (!existsSync(join(tree, command[0]))) {
    throw new Error(`${join(tree, command[0])} does not exist (run npm run build there)`);
  }
  const port = await freePort();
  const fill = {
    '{port}': String(port),
    '{pgport}': String(pgPort),
    '{controlUrl}': controlUrl,
    '{passfile}': passfile,
  };
  return startServer(
    name,
    process.execPath,
    [
      ...(process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      ...command.map((a) => fill[a] ?? a),
    ],
    port,
    {
      cwd: tree,
      env: { PGPASSWORD: proxyPassword },
    },
  );
}

/** The floor reference (bench/lib/node-floor.mjs), knowing alice and her verifier. */
async function startFloor(orgVerifier) {
  const port = await freePort();
  return startServer(
    'node floor',
    process.execPath,
    [
      ...(process.env.PGVPD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      join(ROOT, 'bench/lib/node-floor.mjs'),
      String(port),
    ],
    port,
    { env: { PGVPD_FLOOR_USER: ORG_USER, PGVPD_FLOOR_VERIFIER: orgVerifier } },
  );
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

async function backendsStarted(db) {
  const r = await db.query(
    `select sessions::bigint as n from pg_stat_database where datname = $1`,
    [DATABASE],
  );
  return Number(r.rows[0].n);
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
  backendsStarted: null,
};

/** One pgbench run; `churn` adds -C (a new connection per transaction). */
async function pgbench(t, { churn, seconds, db }) {
  const startedBefore = await backendsStarted(db);
  const before = t.pid ? cpuTimes(t.pid) : null;
  const { stdout } = await run(
    PGBENCH,
    [
      '-n',
      '-S',
      ...(churn ? ['-C'] : []),
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
      t.database,
    ],
    { env: { PGPASSWORD: t.password } },
  );
  const after = t.pid ? cpuTimes(t.pid) : null;
  // pg_stat_database is flushed by backends at most once a second and when they exit.
  await new Promise((r) => setTimeout(r, 1100));
  const startedAfter = await backendsStarted(db);
  const tps = stdout.match(
    /^tps = ([\d.]+) \((?:without initial connection time|including reconnection times)\)/m,
  );
  const tx = stdout.match(/^number of transactions actually processed: (\d+)/m);
  const failed = stdout.match(/^number of failed transactions: (\d+)/m);
  const conn = stdout.match(/^average connection time = ([\d.]+) ms/m);
  if (!tps || !tx) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  if (failed && Number(failed[1]) !== 0) throw new Error(`pgbench reported failures:\n${stdout}`);
  const transactions = Number(tx[1]);
  const us = (key) => (t.pid ? ((after[key] - before[key]) * 1e6) / CLK_TCK : null);
  const cpuUs = t.pid ? us('user') + us('system') : null;
  return {
    tps: Number(tps[1]),
    transactions,
    avgConnectMs: conn ? Number(conn[1]) : null,
    cpuUs,
    cpuUsPerTx: cpuUs === null ? null : cpuUs / transactions,
    userUsPerTx: cpuUs === null ? null : us('user') / transactions,
    systemUsPerTx: cpuUs === null ? null : us('system') / transactions,
    backendsStarted: startedAfter - startedBefore,
  };
}

// The runs of one round, in this order, rotated by one each round.
const RUNS = [
  { kind: 'churn', target: 'direct' },
  { kind: 'churn', target: 'pgbouncer' },
  { kind: 'churn', target: 'org' },
  ...(BEFORE ? [{ kind: 'churn', target: 'org-before' }] : []),
  { kind: 'churn', target: 'nocontext' },
  { kind: 'churn', target: 'floor' },
  { kind: 'churn', target: 'app' },
  ...(BEFORE ? [{ kind: 'churn', target: 'app-before' }] : []),
  { kind: 'steady', target: 'app' },
  { kind: 'steady', target: 'org' },
  ...(BEFORE
    ? [
        { kind: 'steady', target: 'app-before' },
        { kind: 'steady', target: 'org-before' },
      ]
    : []),
];

async function runPgbench(targets, db) {
  log(`warm-up: pgbench -T ${WARMUP_SECONDS} of each run`);
  for (const r of RUNS) {
    await pgbench(targets[r.target], { churn: r.kind === 'churn', seconds: WARMUP_SECONDS, db });
  }
  const results = { churn: {}, steady: {}, failures: [] };
  for (const r of RUNS) results[r.kind][r.target] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = RUNS.map((_, k) => RUNS[(k + round - 1) % RUNS.length]);
    for (const r of order) {
      let x;
      try {
        x = await pgbench(targets[r.target], { churn: r.kind === 'churn', seconds: SECONDS, db });
      } catch (err) {
        // A failed run (e.g. a connection the proxy refused) is recorded and reported, with the
        // proxy's last output; the other runs go on.
        const output = targets[r.target].output?.().trim();
        const failure = `${err.message.split('\n').slice(0, 2).join(' / ')}`;
        log(
          `round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.target.padEnd(9)} FAILED: ${failure}`,
        );
        if (output) log(`${r.target}'s last output: ${output}`);
        results.failures.push({ round, ...r, failure, output: output ?? null });
        results[r.kind][r.target].push(FAILED_RUN);
        continue;
      }
      results[r.kind][r.target].push(x);
      const extra = [
        x.avgConnectMs === null ? null : `avg connect ${x.avgConnectMs.toFixed(2)} ms`,
        x.cpuUsPerTx === null ? null : `proxy ${x.cpuUsPerTx.toFixed(1)} µs CPU/tx`,
        `${x.backendsStarted} backends started`,
      ].filter(Boolean);
      log(
        `round ${round}/${ROUNDS} ${r.kind.padEnd(6)} ${r.target.padEnd(9)} ${x.tps.toFixed(0)} tps, ${extra.join(', ')}`,
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

/** The commit of a checkout, with "+dirty" when its tracked files differ from it. */
function commitOf(tree) {
  const git = (...args) => spawnSync('git', ['-C', tree, ...args], { encoding: 'utf8' });
  const head = git('rev-parse', '--short', 'HEAD').stdout.trim() || '?';
  return git('status', '--porcelain', '--untracked-files=no').stdout.trim()
    ? `${head}+dirty`
    : head;
}

// ---------------------------------------------------------------------------------------------
// Report

const fmt = (n, digits = 0) =>
  n === null || n === undefined || Number.isNaN(n)
    ? '–'
    : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const verdict = (ok) => (ok ? 'pass' : 'FAIL');

function table(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    cells
      .map((c, i) => String(c).padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

// Ratios: [kind, numerator, denominator, target or undefined].
const RATIOS = [
  ['churn', 'org', 'direct', CHURN_OVER_DIRECT],
  ['churn', 'org', 'pgbouncer', CHURN_OVER_PGBOUNCER],
  ['churn', 'pgbouncer', 'direct', undefined],
  ['churn', 'org', 'app', undefined],
  ['churn', 'floor', 'pgbouncer', undefined],
  ['churn', 'org', 'floor', undefined],
  ['churn', 'nocontext', 'pgbouncer', undefined],
  ['churn', 'org', 'nocontext', undefined],
  ['steady', 'org', 'app', STEADY_OVER_APP],
  ...(BEFORE
    ? [
        ['churn', 'org-before', 'direct', undefined],
        ['churn', 'org-before', 'pgbouncer', undefined],
        ['churn', 'org', 'org-before', undefined],
        ['churn', 'app', 'app-before', undefined],
        ['steady', 'org-before', 'app-before', undefined],
        ['steady', 'org', 'org-before', undefined],
        ['steady', 'app', 'app-before', undefined],
      ]
    : []),
];

function summarize(bench, latency) {
  const med = (xs, key) => {
    const v = xs.map((x) => x[key]).filter((x) => x !== null);
    return v.length ? median(v) : null;
  };
  const summary = {
    tps: {},
    avgConnectMs: {},
    cpuUsPerTx: {},
    userUsPerTx: {},
    systemUsPerTx: {},
    backendsStarted: {},
  };
  for (const kind of ['churn', 'steady']) {
    for (const key of Object.keys(summary)) summary[key][kind] = {};
    for (const [name, xs] of Object.entries(bench[kind])) {
      summary.tps[kind][name] = med(xs, 'tps');
      summary.avgConnectMs[kind][name] = med(xs, 'avgConnectMs');
      summary.cpuUsPerTx[kind][name] = med(xs, 'cpuUsPerTx');
      summary.userUsPerTx[kind][name] = med(xs, 'userUsPerTx');
      summary.systemUsPerTx[kind][name] = med(xs, 'systemUsPerTx');
      summary.backendsStarted[kind][name] = med(xs, 'backendsStarted');
    }
  }
  summary.ratios = {};
  summary.roundRatios = {};
  summary.verdicts = {};
  for (const [kind, a, b, target] of RATIOS) {
    const key = `${kind} ${a}/${b}`;
    const ratio = summary.tps[kind][a] / summary.tps[kind][b];
    summary.ratios[key] = ratio;
    summary.roundRatios[key] = bench[kind][a].map((x, i) =>
      x.tps === null || bench[kind][b][i].tps === null ? NaN : x.tps / bench[kind][b][i].tps,
    );
    if (target !== undefined) summary.verdicts[`${key} ≥ ${target}`] = ratio >= target;
  }
  summary.latency = latency;
  return summary;
}

function report(meta, bench, summary) {
  const out = [
    '',
    `pgvpd org-mode benchmark: ${meta.server}, PostgreSQL ${meta.version}, ${meta.pgbouncer}, Node ${process.version}, ${meta.cpus} CPUs`,
    `pgbench -n -S -c ${CLIENTS} -j ${THREADS} -T ${SECONDS} (scale ${SCALE}), SCRAM, ${ROUNDS} interleaved rounds, medians`,
    `load average at start ${meta.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')}, ` +
      `at end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
    `org, app, nocontext, floor: ${ROOT} at ${meta.commits.after}` +
      (BEFORE ? `; org-before, app-before: ${BEFORE} at ${meta.commits.before}` : ''),
  ];
  const ratioCell = (kind, a, b) => {
    const [, , , target] = RATIOS.find((r) => r[0] === kind && r[1] === a && r[2] === b);
    const r = summary.ratios[`${kind} ${a}/${b}`];
    return target === undefined
      ? `${r.toFixed(3)}×`
      : `${r.toFixed(3)}× (≥ ${target} ${verdict(r >= target)})`;
  };
  const rows = (kind) =>
    Object.keys(bench[kind]).map((n) => [
      n,
      fmt(summary.tps[kind][n]),
      fmt(summary.avgConnectMs[kind][n], 2),
      summary.cpuUsPerTx[kind][n] === null
        ? '–'
        : `${fmt(summary.cpuUsPerTx[kind][n], 1)} (${fmt(summary.userUsPerTx[kind][n], 0)} / ${fmt(summary.systemUsPerTx[kind][n], 0)})`,
      fmt(summary.backendsStarted[kind][n]),
    ]);
  const head = () => [
    'target',
    'TPS',
    'avg connect ms',
    'proxy CPU µs/tx (user / sys)',
    'backends started',
  ];

  out.push('', `1. Connection churn: pgbench -C (a new SCRAM connection per transaction)`, '');
  out.push(...table(head(), rows('churn')));
  out.push(
    '',
    `   org/direct ${ratioCell('churn', 'org', 'direct')}, org/pgbouncer ${ratioCell('churn', 'org', 'pgbouncer')}, ` +
      `pgbouncer/direct ${ratioCell('churn', 'pgbouncer', 'direct')}, org/app ${ratioCell('churn', 'org', 'app')}`,
    `   floor/pgbouncer ${ratioCell('churn', 'floor', 'pgbouncer')}, org/floor ${ratioCell('churn', 'org', 'floor')} ` +
      `(floor: a Node.js server doing only the SCRAM handshake, canned answers, no upstream)`,
    `   nocontext/pgbouncer ${ratioCell('churn', 'nocontext', 'pgbouncer')}, org/nocontext ${ratioCell('churn', 'org', 'nocontext')} ` +
      `(nocontext: org mode without its per-checkout context)`,
  );

  if (BEFORE) {
    out.push(
      `   before (${BEFORE} at ${meta.commits.before}): ` +
        `org/org-before ${ratioCell('churn', 'org', 'org-before')}, app/app-before ${ratioCell('churn', 'app', 'app-before')}, ` +
        `org-before/pgbouncer ${ratioCell('churn', 'org-before', 'pgbouncer')}, org-before/direct ${ratioCell('churn', 'org-before', 'direct')}`,
    );
  }

  out.push('', `2. Steady state: pgbench without -C`, '');
  out.push(...table(head(), rows('steady')));
  out.push('', `   org/app ${ratioCell('steady', 'org', 'app')}`);
  if (BEFORE) {
    out.push(
      `   before: org-before/app-before ${ratioCell('steady', 'org-before', 'app-before')}, ` +
        `org/org-before ${ratioCell('steady', 'org', 'org-before')}, app/app-before ${ratioCell('steady', 'app', 'app-before')}`,
    );
  }

  out.push('', 'TPS samples by round (and ratios within each round):');
  for (const kind of ['churn', 'steady']) {
    for (const [n, xs] of Object.entries(bench[kind])) {
      out.push(
        `  ${kind.padEnd(6)} ${n.padEnd(15)} ${xs.map((x) => (x.failed ? 'failed' : fmt(x.tps))).join(', ')}`,
      );
    }
  }
  for (const [key, xs] of Object.entries(summary.roundRatios)) {
    const ok = xs.filter((x) => !Number.isNaN(x));
    out.push(
      `  ${key.padEnd(26)} ${xs.map((x) => (Number.isNaN(x) ? 'failed' : `${x.toFixed(3)}×`)).join(', ')}` +
        `  median ${ok.length ? median(ok).toFixed(3) : '–'}×  (ratio of medians ${summary.ratios[key].toFixed(3)}×)`,
    );
  }
  if (bench.failures.length > 0) {
    out.push('', `FAILED runs (${bench.failures.length}), left out of the medians:`);
    for (const f of bench.failures) {
      out.push(`  round ${f.round} ${f.kind} ${f.target}: ${f.failure}`);
    }
  }

  const lat = summary.latency;
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
      `${t.name.padEnd(10)} pid ${String(t.pid ?? '-').padEnd(8)} PGPASSWORD=${t.password} ` +
        `${PGBENCH} -n -S -C -c 8 -j 2 -T 10 -h 127.0.0.1 -p ${t.port} -U ${t.user} ${t.database}\n`,
    );
  }
  log('holding the servers; Ctrl-C ends the run');
  await new Promise((resolve) => process.once('SIGINT', resolve));
}

async function main() {
  if (!existsSync(join(ROOT, 'dist/proxy/auth/scram-verifier.js'))) {
    throw new Error('dist/proxy/auth/scram-verifier.js does not exist (run npm run build)');
  }
  const loadavgAtStart = loadavg();
  const cluster = await startCluster({
    authHost: 'scram-sha-256',
    conf: [`max_connections = 200`, `password_encryption = 'scram-sha-256'`],
  });
  const { db, version, passwords, orgId, verifier, orgVerifier } = await setupDatabase(
    cluster.adminUrl,
  );
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
    const bouncer = await startPgbouncer(cluster.port, {
      database: DATABASE,
      user: ORG_ROLE,
      verifier,
      poolSize: POOL_SIZE,
    });
    const orgProxy = await startPgvpd('pgvpd org', PGVPD_ORG_COMMAND, pgvpdOptions);
    const appProxy = await startPgvpd('pgvpd app', PGVPD_APP_COMMAND, pgvpdOptions);
    const noContext = await startPgvpd(
      'pgvpd org without context',
      PGVPD_NOCONTEXT_COMMAND,
      pgvpdOptions,
    );
    const floor = await startFloor(orgVerifier);
    const before = {};
    if (BEFORE) {
      before.org = await startPgvpd('pgvpd org (before)', PGVPD_ORG_COMMAND, pgvpdOptions, BEFORE);
      before.app = await startPgvpd('pgvpd app (before)', PGVPD_APP_COMMAND, pgvpdOptions, BEFORE);
    }
    const asOrgRole = { user: ORG_ROLE, database: DATABASE, password: passwords.org };
    const targets = {
      direct: { name: 'direct', port: cluster.port, pid: null, ...asOrgRole, role: ORG_ROLE },
      pgbouncer: {
        name: 'pgbouncer',
        port: bouncer.port,
        pid: bouncer.pid,
        ...asOrgRole,
        role: ORG_ROLE,
      },
      org: {
        name: 'org',
        port: orgProxy.port,
        pid: orgProxy.pid,
        user: ORG_USER,
        database: ORG_DATABASE,
        password: passwords.alice,
        role: ORG_ROLE,
        tenant: orgId,
      },
      nocontext: {
        name: 'nocontext',
        port: noContext.port,
        pid: noContext.pid,
        user: ORG_USER,
        database: ORG_DATABASE,
        password: passwords.alice,
        role: ORG_ROLE,
      },
      floor: {
        name: 'floor',
        port: floor.port,
        pid: floor.pid,
        user: ORG_USER,
        database: ORG_DATABASE,
        password: passwords.alice,
        reference: true,
      },
      app: {
        name: 'app',
        port: appProxy.port,
        pid: appProxy.pid,
        user: `${APP_ROLE}.${TENANT}`,
        database: DATABASE,
        password: passwords.app,
        role: APP_ROLE,
        tenant: TENANT,
      },
    };
    targets.org.output = orgProxy.output;
    targets.app.output = appProxy.output;
    targets.nocontext.output = noContext.output;
    if (BEFORE) {
      targets['org-before'] = {
        ...targets.org,
        name: 'org-before',
        port: before.org.port,
        pid: before.org.pid,
        output: before.org.output,
      };
      targets['app-before'] = {
        ...targets.app,
        name: 'app-before',
        port: before.app.port,
        pid: before.app.pid,
        output: before.app.output,
      };
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

    log(`pgbench: ${RUNS.length} runs × ${ROUNDS} rounds × ${SECONDS} s`);
    const bench = await runPgbench(targets, db);

    log(`SCRAM connect + close: ${CONNECT_WARMUP} + ${CONNECTS} per target`);
    const latency = await connectLatency([targets.direct, targets.pgbouncer, targets.org]);

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
      poolSize: POOL_SIZE,
      orgCommand: PGVPD_ORG_COMMAND.join(' '),
      appCommand: PGVPD_APP_COMMAND.join(' '),
      trees: { after: ROOT, ...(BEFORE ? { before: BEFORE } : {}) },
      commits: { after: commitOf(ROOT), ...(BEFORE ? { before: commitOf(BEFORE) } : {}) },
    };
    const summary = summarize(bench, latency);
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
