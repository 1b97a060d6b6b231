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
// Measured:
//   1. pgbench -n -S -c 8 -j 2 -T $PGVPD_BENCH_SECONDS (default 15), simple and -M prepared, the
//      four targets interleaved for $PGVPD_BENCH_ROUNDS rounds (default 3); median TPS per target;
//      ratios pgvpd/raw pipe (target ≥ 0.95), pgbouncer/direct, raw pipe/direct.
//   2. Proxy CPU per transaction: utime+stime of the proxy process (/proc/<pid>/stat) across each of
//      those pgbench runs, divided by its transactions; median. Target pgvpd ≤ 40 µs.
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
//                              PGVPD_BENCH_SESSIONS (default 500), PGVPD_PG_BIN, PGVPD_PGBENCH,
//                              PGVPD_PGBOUNCER)
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  CLK_TCK,
  cpuTicks,
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
  withDatabase,
} from './lib/cluster.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 15);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 3);
const CONNECTS = positiveInt(process.env.PGVPD_BENCH_CONNECTS, 300);
const SESSIONS = positiveInt(process.env.PGVPD_BENCH_SESSIONS, 500);
const CONNECT_WARMUP = 30;
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
  pgbouncer: { over: 'direct' },
  raw: { over: 'direct' },
};
const CPU_TARGET_US = 40;
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
    [join(ROOT, 'bench/lib/raw-pipe.mjs'), String(port), '127.0.0.1', String(pgPort)],
    port,
  );
}

// The control role's password goes in PGPASSWORD, not in the URL that shows in the process list.
async function startPgvpd(pgPort, controlUrl, controlPassword) {
  if (!existsSync(join(ROOT, PGVPD_COMMAND[0]))) {
    throw new Error(`${PGVPD_COMMAND[0]} does not exist (run npm run build)`);
  }
  const port = await freePort();
  const fill = { '{port}': String(port), '{pgport}': String(pgPort), '{controlUrl}': controlUrl };
  const args = PGVPD_COMMAND.map((a) => fill[a] ?? a);
  return startServer('pgvpd', process.execPath, args, port, {
    cwd: ROOT,
    env: { PGPASSWORD: controlPassword },
  });
}

// ---------------------------------------------------------------------------------------------
// Database setup

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
    const tenant = t.name === 'pgvpd' ? TENANT : null;
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

async function pgbench(t, password, mode, seconds) {
  const before = t.pid ? cpuTicks(t.pid) : null;
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
  const after = t.pid ? cpuTicks(t.pid) : null;
  const tps = stdout.match(/^tps = ([\d.]+) \(without initial connection time\)/m);
  const tx = stdout.match(/^number of transactions actually processed: (\d+)/m);
  const failed = stdout.match(/^number of failed transactions: (\d+)/m);
  if (!tps || !tx) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  if (failed && Number(failed[1]) !== 0) throw new Error(`pgbench reported failures:\n${stdout}`);
  const transactions = Number(tx[1]);
  const cpuUs = t.pid ? ((after - before) * 1e6) / CLK_TCK : null;
  return {
    tps: Number(tps[1]),
    transactions,
    cpuUs,
    cpuUsPerTx: cpuUs === null ? null : cpuUs / transactions,
  };
}

const MODES = ['simple', 'prepared'];

async function runPgbench(targets, password) {
  log(`warm-up: pgbench -T 2 through each target`);
  for (const t of targets) await pgbench(t, password, 'simple', 2);
  const results = Object.fromEntries(
    MODES.map((m) => [m, Object.fromEntries(targets.map((t) => [t.name, []]))]),
  );
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of MODES) {
      for (const t of targets) {
        const r = await pgbench(t, password, mode, SECONDS);
        results[mode][t.name].push(r);
        const cpu = r.cpuUsPerTx === null ? '' : `, proxy ${r.cpuUsPerTx.toFixed(1)} µs CPU/tx`;
        log(
          `round ${round}/${ROUNDS} ${mode.padEnd(8)} ${t.name.padEnd(9)} ${r.tps.toFixed(0)} tps${cpu}`,
        );
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

function summarize(targets, bench, latency, rss) {
  const names = targets.map((t) => t.name);
  const summary = {
    tps: {},
    ratios: {},
    roundRatios: {},
    cpuUsPerTx: {},
    latency,
    rss,
    verdicts: {},
  };
  for (const mode of MODES) {
    const tps = Object.fromEntries(names.map((n) => [n, median(bench[mode][n].map((r) => r.tps))]));
    summary.tps[mode] = tps;
    summary.ratios[mode] = {};
    summary.roundRatios[mode] = {};
    for (const [name, def] of Object.entries(TARGETS)) {
      if (tps[name] === undefined) continue;
      const ratio = tps[name] / tps[def.over];
      summary.ratios[mode][`${name}/${def.over}`] = ratio;
      summary.roundRatios[mode][`${name}/${def.over}`] = bench[mode][name].map(
        (r, i) => r.tps / bench[mode][def.over][i].tps,
      );
      if (def.target !== undefined) {
        summary.verdicts[`tps ${mode} ${name}/${def.over} ≥ ${def.target}`] = ratio >= def.target;
      }
    }
    summary.cpuUsPerTx[mode] = Object.fromEntries(
      targets
        .filter((t) => t.pid)
        .map((t) => [t.name, median(bench[mode][t.name].map((r) => r.cpuUsPerTx))]),
    );
    if (summary.cpuUsPerTx[mode].pgvpd !== undefined) {
      summary.verdicts[`cpu ${mode} pgvpd ≤ ${CPU_TARGET_US} µs/tx`] =
        summary.cpuUsPerTx[mode].pgvpd <= CPU_TARGET_US;
    }
  }
  if (latency.pgvpd) {
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
  ];
  if (skipped) out.push('', `pgvpd NOT MEASURED: ${skipped}`);

  out.push('', '1. TPS (median)', '');
  const ratioHead = Object.entries(TARGETS)
    .filter(([n]) => names.includes(n))
    .map(([n, d]) => `${n}/${d.over}`);
  const tpsRows = MODES.map((mode) => {
    const r = summary.ratios[mode];
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
  out.push(...table(['protocol', ...names, ...ratioHead], tpsRows));

  out.push('', 'TPS samples by round (and ratios within each round):');
  for (const mode of MODES) {
    for (const n of names) {
      out.push(
        `  ${mode.padEnd(8)} ${n.padEnd(9)} ${bench[mode][n].map((r) => fmt(r.tps)).join(', ')}`,
      );
    }
    for (const [name, def] of Object.entries(TARGETS)) {
      if (!bench[mode][name]) continue;
      const ratios = bench[mode][name].map((r, i) => r.tps / bench[mode][def.over][i].tps);
      out.push(
        `  ${mode.padEnd(8)} ${`${name}/${def.over}`.padEnd(16)} ${ratios.map((x) => `${x.toFixed(3)}×`).join(', ')}`,
      );
    }
  }

  out.push('', '2. Proxy CPU per transaction (utime+stime / transactions, median), µs', '');
  const proxies = targets.filter((t) => t.pid).map((t) => t.name);
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
      names.map((n) => [
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
      proxies.map((n) => {
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
    try {
      const controlUrl = `postgres://${PROXY_ROLE}@127.0.0.1:${cluster.port}/${DATABASE}`;
      const proxy = await startPgvpd(cluster.port, controlUrl, proxyPassword);
      const t = { name: 'pgvpd', port: proxy.port, user: `${APP_ROLE}.${TENANT}`, pid: proxy.pid };
      await checkTarget(t, appPassword);
      targets.push(t);
    } catch (err) {
      skipped = err.message;
      log(`pgvpd skipped: ${skipped}`);
    }
    for (const t of targets) {
      const row = await checkTarget(t, appPassword);
      log(`check ${t.name}: role ${row.role}, tenant ${row.tenant}, ${row.branches} branches`);
    }
    const rss = {};
    for (const t of targets.filter((x) => x.pid)) rss[t.name] = { fresh: memory(t.pid) };

    log(
      `pgbench: ${MODES.length} protocols × ${targets.length} targets × ${ROUNDS} rounds × ${SECONDS} s`,
    );
    const bench = await runPgbench(targets, appPassword);

    log(`connect + select 1 + close: ${CONNECT_WARMUP} + ${CONNECTS} per target`);
    const latency = await connectLatency(targets, appPassword);
    const contextSql = skipped
      ? null
      : await contextSqlCost(cluster.port, proxyPassword, appPassword);

    // PgBouncer keeps its server connections after its clients leave (server_idle_timeout), so it
    // goes last; pgvpd first.
    const order = ['pgvpd', 'raw', 'pgbouncer'];
    const proxies = targets
      .filter((x) => x.pid)
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
    };
    const summary = { ...summarize(targets, bench, latency, rss), contextSql };
    report(meta, targets, bench, summary, skipped);
    const json = join(mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-')), 'proxy.json');
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
