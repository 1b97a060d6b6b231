// The benchmarks' database and what pgbench says about a run over it: a database of the throwaway
// cluster with sql/setup.sql installed and pgbench's tables (pgbench -i), the figures of a pgbench
// run's output (bench/org.mjs, bench/app-pool.mjs) and the backends PostgreSQL started meanwhile.

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGBENCH, connect, log, run, withDatabase } from './cluster.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Installs this checkout's sql/setup.sql into `database` (at `dbUrl`) with psql. */
export async function installSetup(dbUrl, database) {
  log(`installing sql/setup.sql into ${database}`);
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
}

/**
 * Creates `database` in the cluster of `adminUrl`, installs sql/setup.sql into it and pgbench's
 * tables at `scale` (pgbench -i -s); returns the database's URL (adminUrl's user).
 */
export async function createBenchDatabase(adminUrl, database, scale) {
  const admin = await connect(adminUrl);
  await admin.query(`create database ${database}`);
  await admin.end();
  const dbUrl = withDatabase(adminUrl, database);
  await installSetup(dbUrl, database);
  log(`pgbench -i -s ${scale}`);
  await run(PGBENCH, ['-i', '-q', '-s', String(scale), dbUrl]);
  return dbUrl;
}

/** The last lines of a text, joined with " / ": what a one-line failure message can show. */
export const lastLines = (text, n = 6) => text.trim().split('\n').slice(-n).join(' / ');

/**
 * TPS, transactions, the average connection time (-C) and the initial connection time (without
 * -C) of a pgbench run's output; throws on no transaction, failed transactions or output it
 * cannot read, with the output's last lines.
 */
export function parsePgbench({ stdout, stderr }) {
  const tps = stdout.match(
    /^tps = ([\d.]+) \((?:without initial connection time|including reconnection times)\)/m,
  );
  const tx = stdout.match(/^number of transactions actually processed: (\d+)/m);
  const failed = stdout.match(/^number of failed transactions: (\d+)/m);
  const conn = stdout.match(/^average connection time = ([\d.]+) ms/m);
  const initial = stdout.match(/^initial connection time = ([\d.]+) ms/m);
  // No transaction at all (e.g. the clients' logins took the whole run): pgbench prints no tps.
  if (tx && Number(tx[1]) === 0)
    throw new Error(`pgbench processed no transaction: ${lastLines(stdout + stderr)}`);
  if (!tps || !tx) throw new Error(`cannot parse pgbench output: ${lastLines(stdout + stderr)}`);
  if (failed && Number(failed[1]) !== 0)
    throw new Error(`pgbench reported failures: ${lastLines(stdout + stderr)}`);
  return {
    tps: Number(tps[1]),
    transactions: Number(tx[1]),
    avgConnectMs: conn ? Number(conn[1]) : null,
    initialConnectMs: initial ? Number(initial[1]) : null,
  };
}

/** How many backends PostgreSQL has started for `database` so far (pg_stat_database.sessions). */
export async function backendsStarted(db, database) {
  const r = await db.query(
    `select sessions::bigint as n from pg_stat_database where datname = $1`,
    [database],
  );
  return Number(r.rows[0].n);
}
