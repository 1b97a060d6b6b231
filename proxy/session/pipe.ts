// App mode's attachment: the dedicated pipe. After the handshake the client's socket and its own
// backend's socket are joined by `pipe()` both ways, and nothing of the proxy runs per message.
// Bytes either reader had already read go first. Any end, error or close of either side ends it;
// a half-closed client (FIN) is done, as PostgreSQL has no half-duplex sessions.
import type { Duplex } from 'node:stream';
import type { ControlPools } from '../upstream/control.js';
import type { Attachment, AttachmentEnd } from './attachment.js';

export interface PipeOptions {
  client: Duplex;
  /** Bytes the client sent after its handshake that the proxy had already read. */
  clientEarly: Buffer;
  upstream: Duplex;
  /** Bytes of the backend the proxy had already read (none in practice: it waited for 'Z'). */
  upstreamLate: Buffer;
  backendPid: number;
  database: string;
  role: string;
  /** Asks PostgreSQL to end the backend at drain; undefined without a control connection. */
  control: ControlPools | undefined;
}

export function pipe(options: PipeOptions): Attachment {
  const { client, upstream } = options;
  let settle: (end: AttachmentEnd) => void = () => undefined;
  const ended = new Promise<AttachmentEnd>((resolve) => (settle = resolve));
  let done = false;
  const finish = (end: AttachmentEnd): void => {
    if (done) return;
    done = true;
    settle(end);
  };
  const clientGone = (): void => {
    finish('client-closed');
  };
  const upstreamGone = (): void => {
    finish('upstream-closed');
  };
  if (options.upstreamLate.length > 0) client.write(options.upstreamLate);
  if (options.clientEarly.length > 0) upstream.write(options.clientEarly);
  client.pipe(upstream);
  upstream.pipe(client);
  client.on('error', clientGone);
  client.once('close', clientGone);
  client.once('end', clientGone);
  upstream.on('error', upstreamGone);
  upstream.once('close', upstreamGone);
  upstream.once('end', upstreamGone);
  // A side that went while the context was being set has no event left to fire.
  if (client.destroyed || client.readableEnded) clientGone();
  if (upstream.destroyed || upstream.readableEnded) upstreamGone();

  const stop = (): void => {
    finish('stopped');
  };
  return {
    ended,
    stop,
    async terminate() {
      const ended = await options.control
        ?.terminate(options.database, options.backendPid)
        .catch(() => false);
      // No right to end it (e.g. a bypass superuser): the sockets are closed instead.
      if (ended !== true) stop();
    },
    release() {
      upstream.destroy();
      return Promise.resolve();
    },
    describe: () => ({
      kind: 'pipe',
      backendPid: options.backendPid,
      database: options.database,
      role: options.role,
    }),
  };
}
