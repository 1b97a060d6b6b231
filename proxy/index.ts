// The composition root: `startProxy(config)` builds the runtime record (runtime.ts), picks the
// mode's flow (app/flow.ts or org/flow.ts), starts the listener (edge/listener.ts) and, when
// admin_port is set, the HTTP control plane (admin/admin-server.ts). Used by the CLI
// (`pgvpd serve`, `pgvpd demo`) and by tests.
import { startAdmin, type AdminServer } from './admin/admin-server.js';
import { appFlow } from './app/flow.js';
import type { ProxyConfig } from './config.js';
import { listen } from './edge/listener.js';
import { createLogger, type Logger } from './logger.js';
import { orgFlow } from './org/flow.js';
import { buildRuntime, closeRuntime, type Runtime } from './runtime.js';

export interface ProxyHandle {
  /** The port actually listened on (useful with port 0). */
  port: number;
  host: string;
  /** What the proxy shares between sessions: config, sessions, pools, catalog… (read only). */
  runtime: Runtime;
  /** The HTTP control plane's admin listener port, when admin_port is set. */
  adminPort: number | undefined;
  /** Its public listener's port, when public_port is set. */
  publicPort: number | undefined;
  /** The admin listener's origin (http://host:port), when admin_port is set. */
  adminUrl: string | undefined;
  /** Sessions open now, in any phase. */
  sessionCount(): number;
  /**
   * Stops accepting, waits up to `timeoutSeconds` (default shutdown_timeout) for sessions to
   * end, then ends the rest with 57P01 and resolves when all are closed. The HTTP control plane
   * answers /readyz with 503 "draining" from the start of the drain and closes at its end.
   */
  close(timeoutSeconds?: number): Promise<void>;
}

export interface ProxyOptions {
  logger?: Logger;
}

/** Fails with a ConfigError or a StartupError (errors.ts) naming what could not be started. */
export async function startProxy(
  config: ProxyConfig,
  options: ProxyOptions = {},
): Promise<ProxyHandle> {
  const logger = options.logger ?? createLogger(config.log_level);
  const runtime = await buildRuntime(config, logger);
  let listener;
  try {
    listener = await listen(runtime, config.mode === 'org' ? orgFlow : appFlow);
  } catch (error) {
    await closeRuntime(runtime);
    throw error;
  }
  const { port } = listener;
  let admin: AdminServer | undefined;
  if (config.admin_port !== undefined) {
    try {
      admin = await startAdmin(runtime, { proxyPort: port });
    } catch (error) {
      await listener.drain(0);
      await closeRuntime(runtime);
      throw error;
    }
  }
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
      admin?.markDraining();
      await listener.drain(timeoutSeconds);
      await closeRuntime(runtime);
      await admin?.close();
      logger.info({ event: 'stopped' }, 'pgvpd proxy stopped');
    })();
    return closing;
  };
  return {
    port,
    host: config.listen_host,
    runtime,
    adminPort: admin?.adminPort,
    publicPort: admin?.publicPort,
    adminUrl: admin?.url,
    sessionCount: () => runtime.sessions.size,
    close,
  };
}
