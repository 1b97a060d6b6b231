// The listener: accepts clients, runs a session per connection, and drains on shutdown
// (stop accepting, let sessions finish for shutdown_timeout, then end the rest with 57P01).
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import { CancelKeys } from './cancel-keys.js';
import { ConfigError, type ProxyConfig } from './config.js';
import { ControlPools } from './control.js';
import { createLogger, type Logger } from './logger.js';
import { compileRoute } from './route.js';
import { ClientSession } from './session.js';
import { upstreamTarget } from './upstream.js';

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
    upstream: upstreamTarget(config),
    control,
    cancelKeys: new CancelKeys(),
    tls,
    logger,
  };
  const sessions = new Set<ClientSession>();

  const server: Server = createServer({ noDelay: true }, (socket: Socket) => {
    socket.on('error', () => undefined);
    const session = new ClientSession(socket, deps);
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
      await control.close();
      logger.info({ event: 'stopped' }, 'pgvpd proxy stopped');
    })();
    return closing;
  };

  return { port, host: config.listen_host, sessionCount: () => sessions.size, close };
}
