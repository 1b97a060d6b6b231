// The HTTP control plane as a whole, started by startProxy when admin_port is set: the admin
// listener (every route, on admin_host, 127.0.0.1 by default) and, with public_port, a second
// listener with the public routes only. A port that cannot be listened on fails the start with
// its own StartupError. `markDraining()` turns /readyz to 503 "draining" at once; `close()` stops
// both listeners (requests under way finish), the readiness check and the database pool.
import type { FastifyInstance } from 'fastify';
import { startupErrors, type StartupError } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { connectTarget } from './connect-info.js';
import type { AdminContext } from './context.js';
import { AdminDatabase } from './database.js';
import { RateLimitCounters } from './rate-limits.js';
import { Readiness } from './readiness.js';
import { buildServer } from './server.js';
import { readSetupFiles, type SetupFiles } from './setup-files.js';

export interface AdminServer {
  /** The admin listener's port (useful with admin_port 0). */
  adminPort: number;
  /** The public listener's port, when public_port is set. */
  publicPort: number | undefined;
  /** The admin listener's origin, e.g. http://127.0.0.1:8080. */
  url: string;
  /** From now on /readyz answers 503 "draining". */
  markDraining(): void;
  close(): Promise<void>;
}

export interface AdminOptions {
  /** The port the proxy listens on (the default connect_port). */
  proxyPort: number;
  /** The /setup files; by default read from the package. */
  setupFiles?: SetupFiles;
}

function origin(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${String(port)}`;
}

async function listenOn(
  app: FastifyInstance,
  host: string,
  port: number,
  failure: (host: string, port: number, error: unknown) => StartupError,
): Promise<number> {
  try {
    await app.listen({ host, port });
  } catch (error) {
    await app.close().catch(() => undefined);
    throw failure(host, port, error);
  }
  const address = app.server.address();
  return typeof address === 'object' && address !== null ? address.port : port;
}

/** Starts the listeners; admin_port must be set. */
export async function startAdmin(runtime: Runtime, options: AdminOptions): Promise<AdminServer> {
  const { config } = runtime;
  const adminPortSetting = config.admin_port;
  if (adminPortSetting === undefined) throw new Error('startAdmin: admin_port is not set');
  const log = runtime.logger.child({ component: 'admin' });
  const controlUrl = config.admin_control_url ?? config.control_url;
  if (controlUrl === undefined) throw new Error('startAdmin: no control_url');
  const db = new AdminDatabase(controlUrl, log);
  const readiness = new Readiness(runtime, db, runtime.metrics, log);
  let adminUrl = '';
  const ctx: AdminContext = {
    runtime,
    db,
    readiness,
    publicUrl: () => (config.public_url ?? adminUrl).replace(/\/+$/, ''),
    connect: connectTarget(config, options.proxyPort),
    setupFiles: options.setupFiles ?? readSetupFiles(),
    // One quota per client across both listeners.
    rateLimits: new RateLimitCounters(),
  };
  const servers: FastifyInstance[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(servers.map((server) => server.close()));
    await readiness.stop();
    await db.close();
  };
  try {
    const admin = await buildServer(ctx, 'admin', log);
    const adminPort = await listenOn(
      admin,
      config.admin_host,
      adminPortSetting,
      startupErrors.adminListen,
    );
    servers.push(admin);
    adminUrl = origin(config.admin_host, adminPort);
    let publicPort: number | undefined;
    if (config.public_port !== undefined) {
      const open = await buildServer(ctx, 'public', log);
      publicPort = await listenOn(
        open,
        config.public_host,
        config.public_port,
        startupErrors.publicListen,
      );
      servers.push(open);
    }
    readiness.start();
    log.info(
      { event: 'admin_listening', url: adminUrl, public_port: publicPort },
      'pgvpd control plane listening',
    );
    let closing: Promise<void> | undefined;
    return {
      adminPort,
      publicPort,
      url: adminUrl,
      markDraining: () => {
        readiness.markDraining();
      },
      close: () => (closing ??= closeAll()),
    };
  } catch (error) {
    await closeAll().catch(() => undefined);
    throw error;
  }
}
