#!/usr/bin/env node
// Benchmark: what does pgvpd's signed tenant context cost compared with a plain setting?
//
// Two identical tables of 100,000 rows (10 tenants, RLS enabled and forced, same indexes):
//   plain_t  policy tenant_id = (select current_setting('app.tenant', true))
//   pgvpd_t  protected by pgvpd.protect(): tenant_id = (select pgvpd.current_tenant_id())
// Both policies evaluate their accessor once per statement (an InitPlan), so the difference is
// pgvpd.current_tenant_id()'s per-statement cost: on the SQL path a SECURITY DEFINER call that
// looks up this backend's context record by pid and token; on the guard path a settings read.
//
// Both context paths (docs/guard.md) in ONE run, on two throwaway clusters side by side:
//   sql    a cluster without the guard module: pgvpd.current_tenant_id() verifies the session's
//          token against its record in every statement (SECURITY DEFINER)
//   guard  a cluster with shared_preload_libraries = 'pgvpd_guard' (make -C extension install):
//          set_context verified the token once and current_tenant_id() inlines to a settings read
//   Each has its own plain_t, so each path's ratio has a baseline from its own server. The guard
//   cluster is left out, and said so, when the module is not installed in $PGVPD_PG_BIN's server.
// Measured, on each server, in the same run:
//   1. pgbench TPS (-n -c 8 -j 2 -T $PGVPD_BENCH_SECONDS, default 15) for a primary-key select and
//      a 100-row range scan, on plain_t and pgvpd_t, interleaved (plain, pgvpd, plain, pgvpd, ...
//      and server after server) for $PGVPD_BENCH_ROUNDS rounds (default 3); reported as medians
//      and the ratio pgvpd/plain. Targets: SQL path ≥ 0.80× (pk) and ≥ 0.85× (range) (issue 2),
//      guard path ≥ 0.97× on both (issue 5).
//      Each pgbench client sets its context once per connection (pgbench variable `inited`).
//   2. The per-call cost of the accessors in one session:
//      select count(<accessor>) from generate_series(1, 200000), median of 5, in µs per call.
//   3. The per-statement cost in one session: 5,000 autocommit primary-key selects on each table,
//      interleaved, median of 5, in µs per statement (includes the same client round trip).
// Before timing it checks correctness (the bench role sees exactly tenant t3's rows in both tables,
// and sees nothing without a context) and that pgbench really sets the context once per client.
//
// Servers: throwaway PostgreSQL 15 clusters started here (initdb in a temp dir, 127.0.0.1 only, a
// free port, trust auth; removed at the end, also on failure or Ctrl-C), or, when
// PGVPD_BENCH_DATABASE_URL is set, only that server (a superuser URL of a disposable server, on
// whichever path setup chooses there): a fresh database pgvpd_bench_<random> is created there and
// dropped at the end (roles are cluster-wide and stay).
//
// Usage: npm run bench   (env: PGVPD_BENCH_SECONDS, PGVPD_BENCH_ROUNDS, PGVPD_BENCH_DATABASE_URL,
//                         PGVPD_PG_BIN, default /usr/lib/postgresql/15/bin)
// Results: a table on stdout and JSON in a temp file whose path is printed at the end.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import {
  PGBENCH,
  PG_BIN,
  cleanup,
  cleanups,
  connect,
  log,
  median,
  positiveInt,
  run,
  startCluster,
  tempDir,
  withDatabase,
} from './lib/cluster.mjs';
import { installSetup } from './lib/pgbench.mjs';

const SECONDS = positiveInt(process.env.PGVPD_BENCH_SECONDS, 15);
const ROUNDS = positiveInt(process.env.PGVPD_BENCH_ROUNDS, 3);
const CLIENTS = 8;
const THREADS = 2;
const ROWS = 100_000;
const CALLS = 200_000;
const BENCH_ROLE = 'pgvpd_bench';
const TENANT = 't3';

// ---------------------------------------------------------------------------------------------
// Database setup

const benchPassword = randomBytes(12).toString('hex');
async function setupDatabase(adminUrl, external) {
  const database = external ? `pgvpd_bench_${randomBytes(4).toString('hex')}` : 'pgvpd_bench';
  const admin = await connect(adminUrl);
  await admin.query(`create database ${database}`);
  await admin.end();
  if (external) {
    cleanups.push(() => {
      // pg is asynchronous; cleanup must be synchronous, so use psql for the drop.
      spawnSync(
        'psql',
        ['-X', '-q', '-d', adminUrl, '-c', `drop database if exists ${database} with (force)`],
        {
          stdio: 'ignore',
        },
      );
    });
  }
  const dbUrl = withDatabase(adminUrl, database);
  await installSetup(dbUrl, database);

  const password = benchPassword;
  const db = await connect(dbUrl);
  const version = (await db.query('show server_version')).rows[0].server_version;
  await db.query(`
    do $$ begin
      if not exists (select 1 from pg_roles where rolname = '${BENCH_ROLE}') then
        create role ${BENCH_ROLE};
      end if;
    end $$;
    alter role ${BENCH_ROLE} login nosuperuser nobypassrls nocreatedb nocreaterole password '${password}';
    grant pgvpd_admin to ${BENCH_ROLE};
    grant connect on database ${database} to ${BENCH_ROLE};
  `);
  log(`creating plain_t and pgvpd_t (${ROWS} rows each)`);
  for (const t of ['plain_t', 'pgvpd_t']) {
    await db.query(`
      create table public.${t} (id int primary key, tenant_id text not null, payload text not null);
      insert into public.${t}
        select i, 't' || (i % 10), 'payload ' || md5(i::text) from generate_series(1, ${ROWS}) i;
      create index ${t}_tenant_id_id on public.${t} (tenant_id, id);
      grant select on public.${t} to ${BENCH_ROLE};
    `);
  }
  await db.query(`
    alter table public.plain_t enable row level security, force row level security;
    create policy plain_tenant_isolation on public.plain_t as permissive for all to public
      using (tenant_id = (select current_setting('app.tenant', true)))
      with check (tenant_id = (select current_setting('app.tenant', true)));
    select pgvpd.protect('public.pgvpd_t');
  `);
  await db.query('vacuum analyze public.plain_t');
  await db.query('vacuum analyze public.pgvpd_t');
  const path = (await db.query('select path from pgvpd.context_path()')).rows[0].path;
  return {
    db,
    path,
    database,
    dbUrl,
    version,
    benchUrl: withDatabase(adminUrl, database, BENCH_ROLE),
  };
}

// ---------------------------------------------------------------------------------------------
// Checks before timing

const VARIANTS = {
  plain: { table: 'plain_t', init: `set app.tenant = '${TENANT}';` },
  pgvpd: { table: 'pgvpd_t', init: `select pgvpd.assume_tenant('${TENANT}');` },
};

const WORKLOADS = {
  pk: {
    title: 'primary-key select',
    body: (t) => `\\set id random(1, ${ROWS})\nselect * from ${t} where id = :id;\n`,
    target: { sql: 0.8, guard: 0.97 },
  },
  range: {
    title: '100-row range scan',
    body: (t) =>
      `\\set lo random(1, ${ROWS - 1000})\nselect * from ${t} where id between :lo and :lo + 999;\n`,
    target: { sql: 0.85, guard: 0.97 },
  },
};

function script(variant, workload) {
  const v = VARIANTS[variant];
  // The context is established once per pgbench client (= per connection): pgbench variables
  // persist per client across transactions, and -D inited=0 sets the starting value.
  return `\\if :inited = 0\n${v.init}\n\\set inited 1\n\\endif\n${WORKLOADS[workload].body(v.table)}`;
}

async function checkCorrectness(benchUrl) {
  const c = await connect(benchUrl, benchPassword);
  try {
    const count = async (t) => Number((await c.query(`select count(*) from ${t}`)).rows[0].count);
    const none = { plain_t: await count('plain_t'), pgvpd_t: await count('pgvpd_t') };
    await c.query(VARIANTS.plain.init);
    await c.query(VARIANTS.pgvpd.init);
    const seen = { plain_t: await count('plain_t'), pgvpd_t: await count('pgvpd_t') };
    const range = {};
    for (const t of ['plain_t', 'pgvpd_t']) {
      const r = await c.query(
        `select count(*) filter (where tenant_id = $2) as mine, count(*) as n
           from ${t} where id between $1 and $1 + 999`,
        [12345, TENANT],
      );
      range[t] = { n: Number(r.rows[0].n), mine: Number(r.rows[0].mine) };
    }
    const expected = ROWS / 10;
    const ok =
      none.plain_t === 0 &&
      none.pgvpd_t === 0 &&
      seen.plain_t === expected &&
      seen.pgvpd_t === expected &&
      Object.values(range).every((r) => r.n === 100 && r.mine === 100);
    const result = { withoutContext: none, withContext: seen, range, ok };
    if (!ok) throw new Error(`correctness check failed: ${JSON.stringify(result)}`);
    log(
      `correct: as ${BENCH_ROLE} with tenant ${TENANT} both tables show ${expected} rows, ` +
        `0 without a context, and a 1,000-id range shows 100 rows`,
    );
    const plans = {};
    for (const [w, def] of Object.entries(WORKLOADS)) {
      for (const [v, { table }] of Object.entries(VARIANTS)) {
        const sql = def
          .body(table)
          .split('\n')[1]
          .replace(/:id|:lo/g, '5000')
          .replace(/;$/, '');
        const r = await c.query(`explain (costs off) ${sql}`);
        plans[`${w}/${v}`] = r.rows.map((row) => row['QUERY PLAN']).join('\n');
      }
    }
    return { ...result, plans };
  } finally {
    await c.end();
  }
}

function pgbenchArgs(benchUrl, file, extra) {
  return ['-n', '-D', 'inited=0', '-f', file, ...extra, benchUrl];
}

// Verifies that pgbench runs the init branch once per client: counts assume_tenant calls.
async function checkOncePerClient(db, benchUrl, dir) {
  const file = join(dir, 'check.sql');
  writeFileSync(file, script('pgvpd', 'pk'));
  await db.query(`alter role ${BENCH_ROLE} set track_functions = 'pl'`);
  try {
    await db.query('select pg_stat_reset()');
    const clients = 4;
    const txPerClient = 50;
    await run(PGBENCH, pgbenchArgs(benchUrl, file, ['-c', `${clients}`, '-t', `${txPerClient}`]), {
      env: { PGPASSWORD: benchPassword },
    });
    // Backends flush their function statistics when they exit, shortly after pgbench disconnects.
    let calls = 0;
    for (let i = 0; i < 50; i++) {
      const r = await db.query(
        `select coalesce(sum(calls), 0)::int as calls from pg_stat_user_functions
          where schemaname = 'pgvpd' and funcname = 'assume_tenant'`,
      );
      calls = r.rows[0].calls;
      if (calls >= clients) break;
      await new Promise((r) => setTimeout(r, 100));
      await db.query('select pg_stat_clear_snapshot()');
    }
    if (calls !== clients) {
      throw new Error(
        `pgbench called assume_tenant ${calls} times for ${clients} clients × ${txPerClient} transactions`,
      );
    }
    log(
      `once per client: ${clients} clients × ${txPerClient} transactions → ${calls} assume_tenant calls`,
    );
    return { clients, transactions: clients * txPerClient, assumeTenantCalls: calls };
  } finally {
    await db.query(`alter role ${BENCH_ROLE} reset track_functions`);
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

async function pgbench(benchUrl, file) {
  const { stdout } = await run(
    PGBENCH,
    pgbenchArgs(benchUrl, file, ['-c', `${CLIENTS}`, '-j', `${THREADS}`, '-T', `${SECONDS}`]),
    { env: { PGPASSWORD: benchPassword } },
  );
  const tps = stdout.match(/^tps = ([\d.]+) \(without initial connection time\)/m);
  const lat = stdout.match(/^latency average = ([\d.]+) ms/m);
  const failed = stdout.match(/^number of failed transactions: (\d+)/m);
  if (!tps) throw new Error(`cannot parse pgbench output:\n${stdout}`);
  if (failed && Number(failed[1]) !== 0) throw new Error(`pgbench reported failures:\n${stdout}`);
  return { tps: Number(tps[1]), latencyMs: lat ? Number(lat[1]) : null };
}

async function runPgbench(servers, dir) {
  const results = Object.fromEntries(servers.map((srv) => [srv.name, {}]));
  for (const w of Object.keys(WORKLOADS)) {
    for (const srv of servers) results[srv.name][w] = { plain: [], pgvpd: [] };
    for (const v of Object.keys(VARIANTS)) writeFileSync(join(dir, `${w}-${v}.sql`), script(v, w));
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const w of Object.keys(WORKLOADS)) {
      for (const srv of servers) {
        for (const v of Object.keys(VARIANTS)) {
          const r = await pgbench(srv.benchUrl, join(dir, `${w}-${v}.sql`));
          results[srv.name][w][v].push(r);
          log(
            `round ${round}/${ROUNDS} ${w.padEnd(5)} ${srv.name.padEnd(5)} ${v.padEnd(5)} ${r.tps.toFixed(1)} tps`,
          );
        }
      }
    }
  }
  return results;
}

// Per-call cost of the accessors in one session, with the context set, median of `reps`.
async function perCall(benchUrl, reps = 5) {
  const c = await connect(benchUrl, benchPassword);
  try {
    await c.query(VARIANTS.plain.init);
    await c.query(VARIANTS.pgvpd.init);
    const exprs = {
      baseline: '1',
      plain: `current_setting('app.tenant', true)`,
      pgvpd: 'pgvpd.current_tenant_id()',
    };
    const check = await c.query(
      `select current_setting('app.tenant', true) as plain, pgvpd.current_tenant_id() as pgvpd`,
    );
    if (check.rows[0].plain !== TENANT || check.rows[0].pgvpd !== TENANT) {
      throw new Error(`per-call session has no context: ${JSON.stringify(check.rows[0])}`);
    }
    const ms = await timeInterleaved(reps, Object.keys(exprs), (k) =>
      c.query(`select count(${exprs[k]}) from generate_series(1, ${CALLS})`),
    );
    const us = (k) => (median(ms[k]) * 1000) / CALLS;
    return {
      calls: CALLS,
      reps,
      msMedian: Object.fromEntries(Object.keys(ms).map((k) => [k, median(ms[k])])),
      usPerCall: { baseline: us('baseline'), plain: us('plain'), pgvpd: us('pgvpd') },
      usPerCallOverPlain: us('pgvpd') - us('plain'),
    };
  } finally {
    await c.end();
  }
}

// Runs `work(key)` for every key, interleaved, `reps` + 1 times, and returns the milliseconds of
// each pass per key; the first pass only warms caches and is not kept.
async function timeInterleaved(reps, keys, work) {
  const ms = Object.fromEntries(keys.map((k) => [k, []]));
  for (let i = 0; i < reps + 1; i++) {
    for (const k of keys) {
      const t0 = process.hrtime.bigint();
      await work(k);
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e6;
      if (i > 0) ms[k].push(elapsed);
    }
  }
  return ms;
}

// Per-statement cost in one session: STATEMENTS autocommit primary-key selects, one round trip
// each (simple protocol, like pgbench's default), plain and pgvpd interleaved, median of `reps`.
// Unlike the generate_series loop this includes what a fresh statement pays (a new transaction,
// snapshot and locks, the InitPlan's executor start-up), and the client's round trip, which is the
// same for both tables.
const STATEMENTS = 5000;
async function perStatement(benchUrl, reps = 5) {
  const c = await connect(benchUrl, benchPassword);
  try {
    await c.query(VARIANTS.plain.init);
    await c.query(VARIANTS.pgvpd.init);
    const ms = await timeInterleaved(reps, Object.keys(VARIANTS), async (v) => {
      for (let n = 0; n < STATEMENTS; n++) {
        await c.query(`select * from ${VARIANTS[v].table} where id = ${1 + ((n * 7919) % ROWS)}`);
      }
    });
    const us = (v) => (median(ms[v]) * 1000) / STATEMENTS;
    return {
      statements: STATEMENTS,
      reps,
      usPerStatement: { plain: us('plain'), pgvpd: us('pgvpd') },
      usPerStatementOverPlain: us('pgvpd') - us('plain'),
    };
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------

function report(meta, path, bench, calls, stmts) {
  const rows = [];
  const summary = {};
  for (const [w, def] of Object.entries(WORKLOADS)) {
    const plain = median(bench[w].plain.map((r) => r.tps));
    const pgvpd = median(bench[w].pgvpd.map((r) => r.tps));
    const ratio = pgvpd / plain;
    // Closed loop: each of the 8 clients waits for its transaction, so latency ≈ clients / TPS.
    const usPerTx = (tps) => (CLIENTS / tps) * 1e6;
    summary[w] = {
      workload: def.title,
      plainTps: bench[w].plain.map((r) => r.tps),
      pgvpdTps: bench[w].pgvpd.map((r) => r.tps),
      plainMedianTps: plain,
      pgvpdMedianTps: pgvpd,
      ratio,
      target: def.target[path],
      meetsTarget: ratio >= def.target[path],
      latencyDeltaUs: usPerTx(pgvpd) - usPerTx(plain),
    };
    rows.push([
      def.title,
      plain.toFixed(0),
      pgvpd.toFixed(0),
      `${ratio.toFixed(3)}×`,
      `≥ ${def.target[path].toFixed(2)}× ${ratio >= def.target[path] ? 'ok' : 'MISSED'}`,
      summary[w].latencyDeltaUs.toFixed(1),
    ]);
  }
  const head = [
    'workload',
    'plain tps',
    'pgvpd tps',
    'pgvpd/plain',
    'target',
    'Δ latency µs (8/TPS)',
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  const out = [
    '',
    `pgvpd context overhead, ${path.toUpperCase()} path: ${meta.server}, PostgreSQL ${meta.version}, ${meta.cpus} CPUs`,
    `pgbench -n -c ${CLIENTS} -j ${THREADS} -T ${SECONDS}, ${ROUNDS} interleaved rounds, medians`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    `per call, one session, select count(<accessor>) from generate_series(1, ${CALLS}), median of ${calls.reps}:`,
    `  current_setting('app.tenant', true)  ${calls.usPerCall.plain.toFixed(3)} µs`,
    `  pgvpd.current_tenant_id()            ${calls.usPerCall.pgvpd.toFixed(3)} µs`,
    `  difference                           ${calls.usPerCallOverPlain.toFixed(3)} µs per call`,
    `  (loop baseline count(1)              ${calls.usPerCall.baseline.toFixed(3)} µs)`,
    '',
    `per statement, one session, ${stmts.statements} autocommit primary-key selects, median of ${stmts.reps}:`,
    `  plain_t                              ${stmts.usPerStatement.plain.toFixed(1)} µs`,
    `  pgvpd_t                              ${stmts.usPerStatement.pgvpd.toFixed(1)} µs`,
    `  difference                           ${stmts.usPerStatementOverPlain.toFixed(1)} µs per statement`,
    '',
  ];
  process.stdout.write(out.join('\n') + '\n');
  return summary;
}

/** Whether the guard module is installed in the server of PGVPD_PG_BIN. */
function guardInstalled() {
  try {
    const lib = execFileSync(join(PG_BIN, 'pg_config'), ['--pkglibdir'], { encoding: 'utf8' });
    return existsSync(join(lib.trim(), 'pgvpd_guard.so'));
  } catch {
    return false;
  }
}

async function main() {
  const external = process.env.PGVPD_BENCH_DATABASE_URL;
  const work = tempDir('pgvpd-bench-scripts-');
  const clusters = [];
  if (external) {
    clusters.push({ adminUrl: external, server: 'PGVPD_BENCH_DATABASE_URL' });
  } else {
    clusters.push(await startCluster());
    if (guardInstalled()) {
      clusters.push(await startCluster({ conf: [`shared_preload_libraries = 'pgvpd_guard'`] }));
    } else {
      log(
        'the guard path is not measured: pgvpd_guard is not installed (make -C extension install)',
      );
    }
  }
  const servers = [];
  try {
    for (const cluster of clusters) {
      const setup = await setupDatabase(cluster.adminUrl, Boolean(external));
      servers.push({ ...setup, name: setup.path, server: cluster.server });
      log(`${cluster.server}: context path ${setup.path}`);
    }
    if (new Set(servers.map((srv) => srv.name)).size !== servers.length) {
      throw new Error(
        `expected one server per context path, got ${servers.map((srv) => srv.name)}`,
      );
    }
    const checks = {};
    for (const srv of servers) {
      checks[srv.name] = {
        correctness: await checkCorrectness(srv.benchUrl),
        oncePerClient: await checkOncePerClient(srv.db, srv.benchUrl, work),
      };
    }
    log(
      `pgbench: ${Object.keys(WORKLOADS).length} workloads × ${servers.length} servers × 2 variants × ${ROUNDS} rounds × ${SECONDS} s`,
    );
    const bench = await runPgbench(servers, work);
    const results = {};
    for (const srv of servers) {
      log(`${srv.name}: per-call cost of the accessors`);
      const calls = await perCall(srv.benchUrl);
      log(`${srv.name}: per-statement cost in one session`);
      const stmts = await perStatement(srv.benchUrl);
      const meta = {
        date: new Date().toISOString(),
        server: srv.server,
        version: srv.version,
        path: srv.name,
        cpus: cpus().length,
        clients: CLIENTS,
        threads: THREADS,
        seconds: SECONDS,
        rounds: ROUNDS,
        rows: ROWS,
      };
      const summary = report(meta, srv.name, bench[srv.name], calls, stmts);
      results[srv.name] = {
        meta,
        summary,
        perCall: calls,
        perStatement: stmts,
        ...checks[srv.name],
      };
    }
    const json = join(mkdtempSync(join(tmpdir(), 'pgvpd-bench-results-')), 'context-overhead.json');
    writeFileSync(json, JSON.stringify(results, null, 2) + '\n');
    process.stdout.write(`results: ${json}\n`);
  } finally {
    for (const srv of servers) await srv.db.end();
  }
}

main().then(
  () => {
    cleanup();
  },
  (err) => {
    log(`failed: ${err.stack ?? err}`);
    cleanup();
    process.exitCode = 1;
  },
);
