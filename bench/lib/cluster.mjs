// Shared helpers of the benchmarks: logging, child processes and their cleanup (also on Ctrl-C),
// free ports, and a throwaway PostgreSQL cluster started as the `postgres` OS user when run as root.

import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export const PG_BIN = process.env.PGVPD_PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const PGBENCH = process.env.PGVPD_PGBENCH ?? '/usr/bin/pgbench';

export function positiveInt(value, fallback) {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${value}`);
  return n;
}

export function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** The p-th percentile (0..100) by nearest rank. */
export const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Processes and cleanup

// Synchronous cleanup functions, run in reverse order of registration.
export const cleanups = [];
// Children still running (pgbench, pg_ctl, proxies); cleanup ends them before anything else.
export const children = new Set();
let cleanedUp = false;
export function cleanup() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const child of children) child.kill('SIGTERM');
  for (const fn of cleanups.reverse()) {
    try {
      fn();
    } catch (err) {
      log(`cleanup: ${err.message}`);
    }
  }
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    log(`${signal}: cleaning up`);
    cleanup();
    process.exit(130);
  });
}
process.on('exit', cleanup);

export const asRoot = process.getuid?.() === 0;

function osId(flag, user) {
  return Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout);
}

/** [file, args] running `file` as the postgres OS user when we are root (initdb, postgres and
 * pgbouncer refuse root). setpriv execs, so the child's pid is the program's pid. */
export function asPostgres(file, args) {
  return asRoot
    ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', file, ...args]]
    : [file, args];
}

export function pgCommand(bin, args) {
  return asPostgres(join(PG_BIN, bin), args);
}

/** Makes a path the postgres OS user's when we are root. */
export function chownToPostgres(path) {
  if (asRoot) chownSync(path, osId('-u', 'postgres'), osId('-g', 'postgres'));
}

export function run(file, args, { env, allowFail = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      children.delete(child);
      if (code !== 0 && !allowFail) {
        reject(new Error(`${file} ${args.join(' ')} exited ${code}\n${stderr}${stdout}`));
      } else resolve({ code, stdout, stderr });
    });
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A temp dir removed at cleanup; owned by the postgres OS user when `forPostgres`. */
export function tempDir(prefix, { forPostgres = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  if (forPostgres) chownToPostgres(dir);
  return dir;
}

/**
 * Starts a throwaway cluster; returns { adminUrl, server, port, dir } and registers its removal.
 *
 * Options:
 *   authHost  authentication of TCP connections ('trust' by default). With anything but trust the
 *             admin URL goes through the Unix socket in `dir`, where the superuser is trusted.
 *   conf      extra postgresql.conf lines.
 */
export async function startCluster({ authHost = 'trust', conf: extraConf = [] } = {}) {
  const dir = tempDir('pgvpd-bench-', { forPostgres: true });
  const data = join(dir, 'data');
  const port = await freePort();
  log(`initdb in ${data}`);
  const auth =
    authHost === 'trust' ? ['-A', 'trust'] : ['--auth-local=trust', `--auth-host=${authHost}`];
  await run(...pgCommand('initdb', ['-D', data, '-U', 'postgres', ...auth, '-E', 'UTF8']));
  const conf = [
    `listen_addresses = '127.0.0.1'`,
    `port = ${port}`,
    `unix_socket_directories = '${dir}'`,
    // Durability is irrelevant to a read-only benchmark and makes setup faster.
    `fsync = off`,
    `synchronous_commit = off`,
    `full_page_writes = off`,
    ...extraConf,
  ].join('\n');
  // Appending keeps the file's owner (postgres).
  appendFileSync(join(data, 'postgresql.conf'), `\n# pgvpd bench\n${conf}\n`);
  if (authHost !== 'trust') {
    // Only loopback TCP, every role with authHost; the superuser comes in through the socket.
    writeFileSync(
      join(data, 'pg_hba.conf'),
      `local all all trust\nhost all all 127.0.0.1/32 ${authHost}\n`,
    );
  }
  const pgctl = (...args) => pgCommand('pg_ctl', ['-D', data, ...args]);
  cleanups.push(() => {
    log('stopping the throwaway cluster');
    const [file, args] = pgctl('stop', '-m', 'immediate', '-w');
    spawnSync(file, args, { stdio: 'ignore' });
  });
  log(`starting PostgreSQL on 127.0.0.1:${port}`);
  await run(...pgctl('start', '-w', '-t', '60', '-l', join(dir, 'server.log')));
  const adminUrl =
    authHost === 'trust'
      ? `postgresql://postgres@127.0.0.1:${port}/postgres`
      : `postgresql://postgres@localhost:${port}/postgres?host=${encodeURIComponent(dir)}`;
  return { adminUrl, server: `throwaway cluster 127.0.0.1:${port}`, port, dir };
}

// ---------------------------------------------------------------------------------------------
// Connections

/** `url` with another database and, when given, another user (and no password). Passwords
 * travel in PGPASSWORD or the client options, not in a URL that would show in the process list. */
export function withDatabase(url, database, user) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  if (user !== undefined) {
    u.username = user;
    u.password = '';
  }
  return u.toString();
}

export async function connect(url, password) {
  const client = new pg.Client({ connectionString: url, ...(password ? { password } : {}) });
  // When the server goes away during cleanup, an idle client must not crash the process.
  client.on('error', (err) => log(`connection: ${err.message}`));
  await client.connect();
  return client;
}
