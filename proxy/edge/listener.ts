// The listener: accepts clients, runs each through its mode's flow as a registered session, and
// drains on shutdown (stop accepting, let sessions finish for shutdown_timeout, then ask each to
// end — PostgreSQL's own 57P01 through a pipe or loan, the proxy's during a handshake — and cut
// what lingers after 2 s).
import { createServer, type Server, type Socket } from 'node:net';
import { startupErrors } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { Session, type Flow } from '../session/lifecycle.js';

export interface Listener {
  /** The port actually listened on (useful with port 0). */
  port: number;
  /** Stops accepting and drains; resolves when every session has closed. */
  drain(timeoutSeconds: number): Promise<void>;
}

export async function listen(runtime: Runtime, flow: Flow): Promise<Listener> {
  const { config, logger, sessions } = runtime;
  const server: Server = createServer({ noDelay: true }, (socket: Socket) => {
    socket.on('error', () => undefined);
    runtime.metrics.clientConnected();
    const session = new Session(socket, config.mode, runtime);
    sessions.add(session);
    void session.done.then(() => sessions.delete(session));
    void session.run(flow);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => {
      reject(startupErrors.listen(config.listen_host, config.port, error));
    });
    server.listen(config.port, config.listen_host, () => {
      server.removeAllListeners('error');
      // E.g. EMFILE at accept: logged; the listener goes on.
      server.on('error', (error) => {
        logger.error({ event: 'error', err: error }, 'listener error');
      });
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;

  const drain = async (timeoutSeconds: number): Promise<void> => {
    runtime.metrics.draining(true);
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
      // PostgreSQL's FATAL travels through the pipe; what lingers 2 s after the requests to end
      // the backends were answered (or 5 s after they were sent, if a control connection does
      // not answer) is cut.
      const lingering = [...sessions];
      let wait: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(lingering.map((s) => s.terminate())),
        new Promise<void>((resolve) => (wait = setTimeout(resolve, 5000))),
      ]);
      clearTimeout(wait);
      const cut = setTimeout(() => {
        for (const s of lingering) s.cut();
      }, 2000);
      // Until every client socket is gone: a closed session whose client does not read keeps
      // its socket flushing, and the listener open, until cut.
      await allDone();
      await stopped;
      clearTimeout(cut);
    }
    await stopped;
  };
  return { port, drain };
}
