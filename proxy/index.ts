// The listener: accepts clients, runs a session per connection, and drains on shutdown
// (stop accepting, let sessions finish for shutdown_timeout, then end the rest with 57P01).
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { CancelKeys } from './edge/cancel-keys.js';
import { compileNetworks } from './app/client-networks.js';
import { ConfigError, type ProxyConfig } from './config.js';
import { ControlPools } from './upstream/control.js';
import { createLogger, type Logger } from './logger.js';
import { compileRoute } from './app/route.js';
import { ClientSession } from './app/flow.js';
import { AuthThrottle, UnauthenticatedConnections } from './auth/throttle.js';
import { Catalog } from './org/catalog.js';
import { OrgSession, type OrgDeps } from './org/flow.js';
import { lookupPassword, parsePassfile, readPassfile } from './upstream/passfile.js';
import { SessionPool } from './pool/session-pool.js';
import { loginUpstream } from './upstream/login.js';
import { newMockSecret } from './auth/scram-server.js';
import { upstreamTarget, type UpstreamTarget } from './upstream/connect.js';

export interface ProxyHandle {
  /** The port actually listened on (useful with port 0). */
  port: number;
  host: string;
  /** Sessions open now, in any phase. */
  sessionCount(): number;
  /**
   * Stops accepting, waits up to `timeoutSeconds` (default shutdown_timeout) for sessions to
   * end, then ends the rest with 57P01 and resolves when all are closed.
   */
  close(timeoutSeconds?: number): Promise<void>;
}

/** What the listener needs of a session, in either mode. */
interface ProxySession {
  readonly done: Promise<void>;
  run(): Promise<void>;
  terminate(): Promise<void>;
  close(): void;
}

/**
 * Org mode's shared parts: the catalog snapshot (loaded before the first client is accepted,
 * so a proxy that cannot read its catalog does not start), the session pool, the auth throttle.
 */
async function startOrgMode(
  config: ProxyConfig,
  deps: {
    control: ControlPools;
    cancelKeys: CancelKeys;
    tls: SecureContext | undefined;
    upstream: UpstreamTarget;
  },
  logger: Logger,
): Promise<{ deps: OrgDeps; close(): Promise<void> }> {
  // The file's entries first, then the environment's; the first match wins (as in pgpass).
  const passwords = [
    ...(config.connect_as_passfile === undefined ? [] : readPassfile(config.connect_as_passfile)),
    ...parsePassfile(config.connect_as_passwords ?? ''),
  ];
  const catalog = new Catalog(config.control_url ?? '', logger);
  await catalog.start();
  // Only for a catalog whose SQL predates its shared mock secret.
  const ownMockSecret = newMockSecret();
  const pool = new SessionPool({
    size: config.pool_size,
    checkoutTimeoutMs: config.pool_checkout_timeout * 1000,
    idleTimeoutMs: config.pool_idle_timeout * 1000,
    maxLifetimeMs: config.pool_max_lifetime * 1000,
    logger,
    login: (key) =>
      loginUpstream(key, {
        password: lookupPassword(passwords, {
          host: key.target.host,
          port: key.target.port,
          database: key.database,
          user: key.role,
        }),
        applicationName: 'pgvpd',
      }),
  });
  return {
    deps: {
      config,
      catalog,
      pool,
      control: deps.control,
      cancelKeys: deps.cancelKeys,
      tls: deps.tls,
      logger,
      throttle: new AuthThrottle(),
      unauthenticated: new UnauthenticatedConnections(config.max_unauthenticated_per_address),
      mockSecret: () => catalog.mockSecret() ?? ownMockSecret,
      defaultUpstream: deps.upstream,
    },
    close: async () => {
      await pool.close();
      await catalog.close();
    },
  };
}

export interface ProxyOptions {
  logger?: Logger;
}

export async function startProxy(
  config: ProxyConfig,
  options: ProxyOptions = {},
): Promise<ProxyHandle> {
  const logger = options.logger ?? createLogger(config.log_level);
  if (config.control_url === undefined) {
    throw new ConfigError(
      'control_url is required: the proxy issues tenant contexts over it (role pgvpd_proxy)',
    );
  }
  const control = new ControlPools(config.control_url, config.control_pool_size);
  const tls =
    config.tls_cert !== undefined && config.tls_key !== undefined
      ? createSecureContext({
          cert: readFileSync(config.tls_cert),
          key: readFileSync(config.tls_key),
        })
      : undefined;
  const deps = {
    config,
    route: compileRoute(config),
    bypassAllowed: compileNetworks(config.bypass_networks),
    upstream: upstreamTarget(config),
    control,
    cancelKeys: new CancelKeys(),
    tls,
    logger,
  };
  const org = config.mode === 'org' ? await startOrgMode(config, deps, logger) : undefined;
  const sessions = new Set<ProxySession>();

  const server: Server = createServer({ noDelay: true }, (socket: Socket) => {
    socket.on('error', () => undefined);
    const session: ProxySession = org
      ? new OrgSession(socket, org.deps)
      : new ClientSession(socket, deps);
    sessions.add(session);
    void session.done.then(() => sessions.delete(session));
    void session.run();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.listen_host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info(
    {
      event: 'listening',
      host: config.listen_host,
      port,
      upstream: `${config.upstream_host}:${String(config.upstream_port)}`,
    },
    'pgvpd proxy listening',
  );

  let closing: Promise<void> | undefined;
  const close = (timeoutSeconds = config.shutdown_timeout): Promise<void> => {
    closing ??= (async () => {
      logger.info(
        { event: 'draining', sessions: sessions.size, timeout_s: timeoutSeconds },
        'draining',
      );
      const stopped = new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      const allDone = (): Promise<void> =>
        Promise.all([...sessions].map((s) => s.done)).then(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        allDone().then(() => false),
        new Promise<boolean>(
          (resolve) =>
            (timer = setTimeout(() => {
              resolve(true);
            }, timeoutSeconds * 1000)),
        ),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        logger.warn(
          { event: 'terminating', sessions: sessions.size },
          'shutdown timeout: ending sessions',
        );
        await Promise.all([...sessions].map((s) => s.terminate()));
        // PostgreSQL's FATAL travels through the pipe; sockets that linger are cut after 2 s.
        const cut = setTimeout(() => {
          for (const s of sessions) s.close();
        }, 2000);
        await allDone();
        clearTimeout(cut);
      }
      await stopped;
      await org?.close();
      await control.close();
      logger.info({ event: 'stopped' }, 'pgvpd proxy stopped');
    })();
    return closing;
  };

  return { port, host: config.listen_host, sessionCount: () => sessions.size, close };
}
