// bench/org.mjs's "idle" part, the parent's side: many idle clients on one proxy
// (bench/lib/idle-clients.mjs in a child process) and the proxy's memory meanwhile.
//   1. the proxy's VmRSS / VmHWM and open file descriptors before (a fresh proxy, checked once);
//   2. the child opens the clients at a bounded rate, each authenticated (SCRAM), with one query,
//      then idle; read the proxy's memory and descriptors 2 s after the last one is open;
//   3. one more client connects and queries while they are all there (is the proxy still
//      serving, and how long does a login take now);
//   4. the clients end; the proxy's memory 2 s later (what it gives back, or keeps).
// Every open client socket is a file descriptor in both processes: fdLimitPrefix() says how to
// start a process with enough of them (prlimit up to the hard limit), or fails with the reason.

import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { children, log, sleep } from './cluster.mjs';
import { memory } from './servers.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** This process's soft and hard limits of open files (inherited by its children). */
function fileLimits() {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = line.slice('Max open files'.length).trim().split(/\s+/);
  const n = (x) => (x === 'unlimited' ? Infinity : Number(x));
  return { soft: n(soft), hard: n(hard) };
}

/**
 * The command prefix that gives a child at least `needed` open files: [] when the inherited soft
 * limit suffices, else ['prlimit', '--nofile=<needed>:<hard>'] (prlimit execs, so the pid is the
 * program's). Throws when even the hard limit is too low (raise it with `ulimit -Hn` as root).
 */
export function fdLimitPrefix(needed) {
  const { soft, hard } = fileLimits();
  if (soft >= needed) return [];
  if (hard < needed) {
    throw new Error(
      `the idle part needs ${needed} open files per process; the hard limit is ${hard} (ulimit -Hn)`,
    );
  }
  return ['prlimit', `--nofile=${needed}:${hard === Infinity ? 'unlimited' : hard}`];
}

function openFds(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Memory and descriptors of the proxy now. */
function sample(pid) {
  return { ...memory(pid), fds: openFds(pid) };
}

/** Connects one client and runs a query; milliseconds to ReadyForQuery, and the tenant. */
async function probe(port, u) {
  const t0 = process.hrtime.bigint();
  const c = new pg.Client({ host: '127.0.0.1', port, ...u });
  c.on('error', () => {});
  await c.connect();
  const connectMs = Number(process.hrtime.bigint() - t0) / 1e6;
  try {
    const r = await c.query('select pgvpd.current_tenant_id() as t');
    return { connectMs, tenant: r.rows[0].t };
  } finally {
    await c.end();
  }
}

/**
 * Opens `clients` idle clients on `proxy` ({ pid, port }) as `users` ([{ user, database,
 * password, tenant }], taken in turn), `concurrency` logins at a time; returns what the proxy
 * held before, with them and after them, and what the child saw.
 */
export async function measureIdleClients(proxy, { users, clients, concurrency }) {
  await probe(proxy.port, users[0]);
  await sleep(1000);
  const before = sample(proxy.pid);
  const prefix = fdLimitPrefix(clients + 256);
  const [file, ...args] = [...prefix, process.execPath, join(HERE, 'idle-clients.mjs')];
  const child = spawn(file, args, {
    env: {
      ...process.env,
      PGVPD_IDLE_PORT: String(proxy.port),
      PGVPD_IDLE_CLIENTS: String(clients),
      PGVPD_IDLE_CONCURRENCY: String(concurrency),
      PGVPD_IDLE_USERS: JSON.stringify(users),
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  child.stderr.on('data', (d) => process.stderr.write(d));
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal);
    }),
  );
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`idle-clients exited (${await exited}) without its report`);
    return JSON.parse(value);
  };
  try {
    const opened = await nextLine();
    log(
      `idle: ${opened.opened} clients open in ${opened.seconds.toFixed(1)} s, ${opened.failed} failed` +
        (opened.errors.length ? ` (${opened.errors.join('; ')})` : ''),
    );
    await sleep(2000);
    const idle = sample(proxy.pid);
    const extra = await probe(proxy.port, users[0]).then(
      (x) => ({ ok: x.tenant === users[0].tenant, connectMs: x.connectMs, error: null }),
      (err) => ({ ok: false, connectMs: null, error: err.message }),
    );
    child.stdin.end();
    const closed = await nextLine();
    await exited;
    await sleep(2000);
    const after = sample(proxy.pid);
    return {
      clients,
      concurrency,
      users: users.length,
      before,
      idle,
      after,
      extra,
      ...opened,
      ...closed,
    };
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
}
