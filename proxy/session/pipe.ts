// App mode's attachment: the dedicated pipe. After the handshake the client's socket and its own
// backend's socket are joined both ways, and nothing of the proxy runs per message. Bytes either
// reader had already read go first. Any end, error or close of either side ends it; a half-closed
// client (FIN) is done, as PostgreSQL has no half-duplex sessions.
//
// Why not `socket.pipe()`: a chunk read by a socket goes through its Readable (buffered, then
// emitted as 'data', then written by pipe's listener). In a process as busy as the proxy that
// shared stream code costs several µs per transaction more than in a minimal process
// (docs/benchmarks.md, app mode). Here each socket hands what it reads straight to the other
// side's write(), through its own push(), which is what a socket calls for every chunk it reads
// (net's onStreamRead); push() answering false stops the reading, exactly as a full Readable
// would, and the other side's 'drain' starts it again. End of stream still goes through the
// Readable. Guarantees: should a Node version deliver chunks some other way, they reach the
// Readable and its 'data' listener forwards them (with pause/resume back-pressure), so the pipe
// stays correct and only loses the speed; test/proxy/pipe-ends.test.ts moves 24 MB each way
// through a reader that stops and checks every byte.
import { Readable, type Duplex } from 'node:stream';
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

/** Sends everything `from` reads to `to`, with back-pressure, until either side ends. */
function forward(from: Duplex, to: Duplex): void {
  // What the Readable already holds goes first.
  for (let chunk: unknown = from.read(); chunk !== null; chunk = from.read()) to.write(chunk);
  from.push = function (chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk === null) return Readable.prototype.push.call(this, null, encoding);
    return to.write(chunk);
  };
  // The documented path, should chunks arrive through it.
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  const restart = (): void => {
    if (from.destroyed) return;
    from.resume();
    // Starts the socket's handle again after a push() answered false.
    from._read(0);
  };
  to.on('drain', restart);
  restart();
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
  // As pipe() would: the end of one side ends the other's writing.
  const clientGone = (): void => {
    upstream.end();
    finish('client-closed');
  };
  const upstreamGone = (): void => {
    client.end();
    finish('upstream-closed');
  };
  if (options.upstreamLate.length > 0) client.write(options.upstreamLate);
  if (options.clientEarly.length > 0) upstream.write(options.clientEarly);
  forward(client, upstream);
  forward(upstream, client);
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
