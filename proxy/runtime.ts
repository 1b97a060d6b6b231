// The runtime record: everything a running proxy shares between its sessions, built once at
// start by the composition root (index.ts) and read by anything that must report on or act on
// the proxy as a whole (the listener's drain, an admin API). Sessions are registered here from
// accept until their client side is closed. Org mode adds its catalog, pool and login throttle.
// Each step that can fail at start fails with its own StartupError (errors.ts), naming what
// failed.
import { UpstreamSpares } from './upstream/spares.js';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import { compileNetworks } from './app/client-networks.js';
import { RoleKeys } from './app/role-keys.js';
import type { ScramKeys } from './auth/scram-client.js';
import { compileRoute, type AppRoute } from './app/route.js';
import { AuthThrottle, UnauthenticatedConnections } from './auth/throttle.js';
import { newMockSecret } from './auth/scram-server.js';
import { ConfigError, type PoolMode, type ProxyConfig } from './config.js';
import { CancelKeys } from './edge/cancel-keys.js';
import { packageVersion } from './package-root.js';
import { ProxyError, startupErrors } from './errors.js';
import type { Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { Catalog } from './org/catalog.js';
import { SessionPool } from './pool/session-pool.js';
import { invalidateContexts } from './pool/backend-book.js';
import { restoreOwner } from './pool/checkout.js';
import type { Session, SessionDescription } from './session/lifecycle.js';
import type { UpstreamTarget } from './upstream/connect.js';
import { ControlPools } from './upstream/control.js';
import { InstanceKeys, instanceName } from './upstream/instance-keys.js';
import { loginUpstream, type PoolKey, type PooledSession } from './upstream/login.js';
import {
  lookupPassword,
  parsePassfile,
  readPassfile,
  type PassEntry,
} from './upstream/passfile.js';

/** App mode's parts: how a username routes, and who may bypass the tenant. */
export interface AppParts {
  route: (username: string) => AppRoute;
  /** Whether a client address is in bypass_networks. */
  bypassAllowed: (address: string | undefined) => boolean;
  /** With pool_mode: the pool of tenant clients (bypass users keep a backend of their own). */
  pooled: AppPool | undefined;
  /** upstream_spares: connections opened ahead for the dedicated pipe (none when 0). */
  spares: UpstreamSpares | undefined;
}

/** What pooling needs, in org mode and in app mode with pool_mode. */
export interface PoolParts {
  pool: SessionPool;
  /** This proxy's registrations per (server, database), the keys of its switch grants. */
  instanceKeys: InstanceKeys;
  throttle: AuthThrottle;
  /** Connections per address not yet authenticated (max_unauthenticated_per_address). */
  unauthenticated: UnauthenticatedConnections;
}

/** App mode's pool: per (database, role), logins by SCRAM pass-through. */
export interface AppPool extends PoolParts {
  mode: PoolMode;
  /** The newest pass-through keys per pool key. */
  keys: RoleKeys;
}

/** Org mode's parts. */
export interface OrgParts extends PoolParts {
  catalog: Catalog;
  /**
   * The secret of unknown users' mock salts, read at each handshake: the catalog's, shared by
   * every proxy of the catalog (a per-process one only when the catalog has none).
   */
  mockSecret(): Buffer;
}

export interface Runtime {
  readonly config: ProxyConfig;
  readonly logger: Logger;
  /** The proxy's configured upstream (in org mode: the catalog's `default` server). */
  readonly upstream: UpstreamTarget;
  readonly control: ControlPools;
  readonly cancelKeys: CancelKeys;
  /** Client TLS, when tls_cert and tls_key are set. */
  readonly tls: SecureContext | undefined;
  /** Live sessions, in any phase, from accept until closed. */
  readonly sessions: Set<Session>;
  readonly startedAt: number;
  /** The proxy's Prometheus metrics (GET /metrics renders them). */
  readonly metrics: Metrics;
  readonly app: AppParts | undefined;
  readonly org: OrgParts | undefined;
  /** The pool, in org mode and in app mode with pool_mode. */
  readonly pooling: PoolParts | undefined;
  /** Every live session, described. */
  describeSessions(): SessionDescription[];
}

function clientTls(config: ProxyConfig): SecureContext | undefined {
  if (config.tls_cert === undefined || config.tls_key === undefined) return undefined;
  try {
    return createSecureContext({
      cert: readFileSync(config.tls_cert),
      key: readFileSync(config.tls_key),
    });
  } catch (error) {
    throw startupErrors.tls(config.tls_cert, config.tls_key, error);
  }
}

function upstreamOf(config: ProxyConfig): UpstreamTarget {
  let tlsCa: string | undefined;
  if (config.upstream_tls_ca !== undefined) {
    try {
      tlsCa = readFileSync(config.upstream_tls_ca, 'utf8');
    } catch (error) {
      throw startupErrors.upstreamTlsCa(config.upstream_tls_ca, error);
    }
  }
  return {
    host: config.upstream_host,
    port: config.upstream_port,
    tls: config.upstream_tls,
    tlsVerify: config.upstream_tls_verify,
    tlsCa,
  };
}

function connectAsPasswords(config: ProxyConfig): PassEntry[] {
  // The file's entries first, then the environment's; the first match wins (as in pgpass).
  try {
    return [
      ...(config.connect_as_passfile === undefined ? [] : readPassfile(config.connect_as_passfile)),
      ...parsePassfile(config.connect_as_passwords ?? ''),
    ];
  } catch (error) {
    // readPassfile's ConfigError already names the file and the problem.
    if (error instanceof ConfigError) throw error;
    throw startupErrors.passfile(error);
  }
}

/** The catalog snapshot is loaded before the first client is accepted: no catalog, no start. */
async function orgParts(
  config: ProxyConfig,
  controlUrl: string,
  control: ControlPools,
  logger: Logger,
  metrics: Metrics,
  upstream: UpstreamTarget,
): Promise<OrgParts> {
  const passwords = connectAsPasswords(config);
  const catalog = new Catalog(controlUrl, logger, metrics);
  // Whatever a context was computed from may have changed: every backend switches in anew.
  catalog.onApplied(invalidateContexts);
  try {
    await catalog.start();
  } catch (error) {
    await catalog.close().catch(() => undefined);
    throw startupErrors.catalog(error);
  }
  // Only for a catalog whose SQL predates its shared mock secret.
  const ownMockSecret = newMockSecret();
  const parts = poolParts(config, control, logger, metrics, upstream, (key) =>
    pooledLogin(passwords, key),
  );
  return { ...parts, catalog, mockSecret: () => catalog.mockSecret() ?? ownMockSecret };
}

/**
 * One pooled login of `key`: the password the passfile lines give its server, database and role
 * (if any), and in app mode the pass-through keys, used first when the server asks for SCRAM.
 */
function pooledLogin(
  passwords: PassEntry[],
  key: PoolKey,
  scramKeys?: ScramKeys,
): Promise<PooledSession> {
  return loginUpstream(key, {
    password: lookupPassword(passwords, {
      host: key.target.host,
      port: key.target.port,
      database: key.database,
      user: key.role,
    }),
    scramKeys,
    applicationName: 'pgvpd',
    backendStart: true,
  });
}

/** The pool and what goes with it: switch-grant keys, login throttle, unauthenticated cap. */
function poolParts(
  config: ProxyConfig,
  control: ControlPools,
  logger: Logger,
  metrics: Metrics,
  upstream: UpstreamTarget,
  login: (key: PoolKey) => Promise<PooledSession>,
  outdated?: (session: PooledSession) => string | undefined,
): PoolParts {
  const instanceKeys = new InstanceKeys(
    control,
    config.instance_lease,
    instanceName(config.port),
    logger,
    metrics,
  );
  const pool = new SessionPool({
    size: config.pool_size,
    checkoutTimeoutMs: config.pool_checkout_timeout * 1000,
    idleTimeoutMs: config.pool_idle_timeout * 1000,
    maxLifetimeMs: config.pool_max_lifetime * 1000,
    logger,
    metrics,
    login,
    outdated,
    // A released session gets its last owner's context back after its reset.
    restore: restoreOwner({ instanceKeys }, upstream, config.context_max_age * 1000, metrics),
  });
  return {
    pool,
    instanceKeys,
    throttle: new AuthThrottle(),
    unauthenticated: new UnauthenticatedConnections(config.max_unauthenticated_per_address),
  };
}

/**
 * App mode with pool_mode: logins of the username's role with the newest pass-through keys a
 * client brought (a configured password only where the server asks for MD5 or a cleartext
 * password); keys the server shows stale are dropped.
 */
function appPool(
  config: ProxyConfig,
  mode: PoolMode,
  control: ControlPools,
  logger: Logger,
  metrics: Metrics,
  upstream: UpstreamTarget,
): AppPool {
  const passwords = connectAsPasswords(config);
  const keys = new RoleKeys();
  // The keys each session logged in with: it serves only while they are the role's newest.
  const loggedInWith = new WeakMap<PooledSession, ScramKeys>();
  const login = async (key: PoolKey): Promise<PooledSession> => {
    const scramKeys = keys.get(key);
    try {
      const session = await pooledLogin(passwords, key, scramKeys);
      if (scramKeys) loggedInWith.set(session, scramKeys);
      return session;
    } catch (error) {
      if (scramKeys && error instanceof ProxyError && error.kind === 'scram_keys_stale')
        keys.forget(key, scramKeys);
      throw error;
    }
  };
  const outdated = (session: PooledSession): string | undefined =>
    keys.outdated(session.key, loggedInWith.get(session));
  return { ...poolParts(config, control, logger, metrics, upstream, login, outdated), mode, keys };
}

export async function buildRuntime(config: ProxyConfig, logger: Logger): Promise<Runtime> {
  if (config.control_url === undefined) {
    throw new ConfigError(
      'control_url is required: the proxy issues tenant contexts over it (role pgvpd_proxy)',
    );
  }
  const tls = clientTls(config);
  const upstream = upstreamOf(config);
  const metrics = new Metrics({
    mode: config.mode,
    version: packageVersion,
    pooled: config.mode === 'app' && config.pool_mode !== undefined,
  });
  // Opens nothing until first used.
  const control = new ControlPools(config.control_url, config.control_pool_size, metrics);
  const org =
    config.mode === 'org'
      ? await orgParts(config, config.control_url, control, logger, metrics, upstream)
      : undefined;
  const app =
    config.mode === 'app'
      ? {
          route: compileRoute(config),
          bypassAllowed: compileNetworks(config.bypass_networks),
          pooled:
            config.pool_mode === undefined
              ? undefined
              : appPool(config, config.pool_mode, control, logger, metrics, upstream),
          spares:
            config.upstream_spares > 0
              ? new UpstreamSpares(
                  upstream,
                  config.upstream_spares,
                  config.upstream_spare_lifetime * 1000,
                )
              : undefined,
        }
      : undefined;
  const pooling: PoolParts | undefined = org ?? app?.pooled;
  const sessions = new Set<Session>();
  metrics.observe({ sessions: () => sessions, pool: pooling && (() => pooling.pool.stats()) });
  return {
    config,
    logger,
    upstream,
    control,
    cancelKeys: new CancelKeys(),
    tls,
    sessions,
    startedAt: Date.now(),
    metrics,
    app,
    org,
    pooling,
    describeSessions: () => [...sessions].map((session) => session.describe()),
  };
}

/** Releases what the runtime holds, once every session has closed. */
export async function closeRuntime(runtime: Runtime): Promise<void> {
  runtime.app?.spares?.close();
  if (runtime.pooling) {
    await runtime.pooling.pool.close();
    // After the pool (no backend is left to lose its context), before the control connections.
    await runtime.pooling.instanceKeys.close();
  }
  if (runtime.org) await runtime.org.catalog.close();
  await runtime.control.close();
}
