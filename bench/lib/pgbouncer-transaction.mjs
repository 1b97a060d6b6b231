// PgBouncer in transaction mode for bench/org.mjs: one database entry, one user (SCRAM with the
// user's verifier from pg_authid in the auth file), so that every client of that (user, database)
// pair shares ONE pool of `poolSize` server connections (PgBouncer pools per user and database).
// Run as the postgres OS user when we are root; ended by cleanup() like every child.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asPostgres, freePort, tempDir } from './cluster.mjs';
import { PGBOUNCER, startServer } from './servers.mjs';

export async function startPgbouncerTransaction(
  pgPort,
  { database, user, verifier, poolSize, maxClientConn = 500 },
) {
  const dir = tempDir('pgvpd-bench-pgbouncer-tx-', { forPostgres: true });
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
      'pool_mode = transaction',
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
  const server = await startServer(
    'pgbouncer (transaction)',
    ...asPostgres(PGBOUNCER, [ini]),
    port,
  );
  return { ...server, version };
}
