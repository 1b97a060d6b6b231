// Long-running children of the benchmarks (proxies, PgBouncer) and what /proc says about them.
// Shared by bench/proxy.mjs and bench/org.mjs; every child is registered in cluster.mjs's `children`, so cleanup() (also on Ctrl-C)
// ends it.

import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asPostgres, children, freePort, log, tempDir } from './cluster.mjs';

export const PGBOUNCER = process.env.PGVPD_PGBOUNCER ?? '/usr/sbin/pgbouncer';

export const CLK_TCK =
  Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** utime and stime of a process, in clock ticks (CLK_TCK per second). */
export function cpuTimes(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]), system: Number(fields[12]) };
}

/**
 * cutime + cstime of this process, in clock ticks: the CPU of its children that have ended and
 * been waited for (e.g. the pgbench processes of a run, once they exited).
 */
export function reapedChildrenTicks() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[13]) + Number(fields[14]);
}

/** utime + stime of a process, in clock ticks. */
export function cpuTicks(pid) {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** VmRSS and VmHWM of a process, MB. */
export function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1]);
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
}

// Set once the run is over (stopServers()), so that the servers' exits are not reported.
let stopping = false;
export function stopServers() {
  stopping = true;
}

export function waitForPort(port, child, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before listening`));
        return;
      }
      const s = tcpConnect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline)
          reject(new Error(`not listening on ${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** Starts a server process and waits until it accepts connections on `port`. */
export async function startServer(name, file, args, port, { cwd, env } = {}) {
  const child = spawn(file, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const keep = (d) => {
    output = (output + d).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (!stopping) log(`${name} exited (${code ?? signal})${output ? `: ${output.trim()}` : ''}`);
  });
  try {
    await new Promise((resolve, reject) => {
      child.once('error', reject);
      waitForPort(port, child).then(resolve, reject);
    });
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${name}: ${err.message}${output ? `\n${output.trim()}` : ''}`, { cause: err });
  }
  log(`${name} listening on 127.0.0.1:${port} (pid ${child.pid})`);
  return { child, pid: child.pid, port, output: () => output };
}

/**
 * PgBouncer in front of `database` on 127.0.0.1:pgPort, SCRAM for `user` with its verifier (from
 * pg_authid) in the auth file; run as the postgres OS user when we are root. `poolMode` session
 * (the default) or transaction; one database entry and one user, so every client shares ONE pool
 * of `poolSize` server connections (PgBouncer pools per user and database).
 */
/**
 * The floor reference (node-floor.mjs): a Node.js server that authenticates `user` with SCRAM
 * against `verifier` and answers every query with a canned row, no upstream. `nodeArgs`: node
 * options (PGVPD_BENCH_NODE_ARGS).
 */
export async function startFloor(user, verifier, nodeArgs = []) {
  const port = await freePort();
  return startServer(
    'node floor',
    process.execPath,
    [...nodeArgs, join(dirname(fileURLToPath(import.meta.url)), 'node-floor.mjs'), String(port)],
    port,
    { env: { PGVPD_FLOOR_USER: user, PGVPD_FLOOR_VERIFIER: verifier } },
  );
}

export async function startPgbouncer(
  pgPort,
  { database, user, verifier, maxClientConn = 200, poolSize = 20, poolMode = 'session' },
) {
  const dir = tempDir('pgvpd-bench-pgbouncer-', { forPostgres: true });
  const port = await freePort();
  const userlist = join(dir, 'userlist.txt');
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(userlist, `"${user}" "${verifier}"\n`, { mode: 0o600 });
  writeFileSync(
    ini,
    [
      '[databases]',
      `${database} = host=127.0.0.1 port=${pgPort} dbname=${database}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${userlist}`,
      `pool_mode = ${poolMode}`,
      `max_client_conn = ${maxClientConn}`,
      `default_pool_size = ${poolSize}`,
      'log_connections = 0',
      'log_disconnections = 0',
      'ignore_startup_parameters = extra_float_digits',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      '',
    ].join('\n'),
  );
  // The directory is the postgres user's; the files must be too.
  for (const f of [userlist, ini]) spawnSync('chown', ['postgres:postgres', f]);
  const version = spawnSync(PGBOUNCER, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  const name = poolMode === 'session' ? 'pgbouncer' : `pgbouncer (${poolMode})`;
  const server = await startServer(name, ...asPostgres(PGBOUNCER, [ini]), port);
  return { ...server, version };
}

/**
 * On-CPU time of all threads of a process, nanoseconds (the first field of each
 * /proc/<pid>/task/<tid>/schedstat): finer than utime+stime's clock ticks. Threads that exited
 * between two readings are missed; Node's threads (main, libuv pool, V8 platform) live as long
 * as the process.
 */
export function cpuNs(pid) {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}
