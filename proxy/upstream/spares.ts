// Spare upstream connections (upstream_spares, app mode's dedicated pipe): TCP (and TLS, when
// upstream_tls) connections to PostgreSQL opened ahead of the clients, on which nothing has been
// sent. PostgreSQL starts a backend process for each connection it accepts and that process then
// waits for the startup packet, so a client given a spare skips the server's process start
// (about 1 ms of a connect on the machine of docs/benchmarks.md) and the proxy's TCP connect.
// A spare carries no credentials and no client's byte until it is taken: the client's startup
// packet is the first thing written on it. Its server process, though, was started with the
// server's pg_hba.conf rules and state of that moment (a reload, the end of a recovery or the
// start of a shutdown reach only processes started after them): hence a short lifetime
// (upstream_spare_lifetime, 5 s by default), and app/flow.ts's retry on a new connection when a
// spare answers the startup packet with 57P03 (the server was not accepting connections when it
// started the process) or closes without a byte.
//
// PostgreSQL ends a connection that sends no startup packet within authentication_timeout
// (60 s by default), quietly (nothing is logged for a connection that sent nothing): a spare is
// closed and replaced after `lifetimeMs`, which must stay below it. One that the server closes
// first (a restart, a shorter timeout) is dropped and replaced; failing connects are retried no
// more often than once a second.
import type { Upstream, UpstreamTarget } from './connect.js';
import { connectUpstream } from './connect.js';

interface Spare {
  upstream: Upstream;
  openedAt: number;
  /** Stops watching the connection (its close and data) once it is taken or dropped. */
  unwatch: () => void;
}

/** After a failed connect, the next attempt waits this long. */
const RETRY_MS = 1000;

export class UpstreamSpares {
  private readonly ready: Spare[] = [];
  private opening = 0;
  private closed = false;
  private retryAt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly expiry: NodeJS.Timeout;

  constructor(
    private readonly target: UpstreamTarget,
    private readonly count: number,
    private readonly lifetimeMs: number,
  ) {
    // Spares past their lifetime are closed and replaced even while no client comes.
    this.expiry = setInterval(
      () => {
        this.dropExpired();
      },
      Math.max(100, Math.min(1000, lifetimeMs / 4)),
    );
    this.expiry.unref();
    this.refill();
  }

  /**
   * A spare within its lifetime, nothing sent on it, or undefined when none is ready (the caller
   * then connects as without spares). Either way a replacement is opened.
   */
  take(): Upstream | undefined {
    this.dropExpired();
    const spare = this.ready.shift();
    // Replaced at once: the server starts the new process while this client authenticates. (Put
    // off until the handshake is done, its start fell on the client's first statement instead:
    // on 2 cores the bench measured select 1 at 1.11 ms against 0.38, docs/benchmarks.md.)
    this.refill();
    if (!spare) return undefined;
    spare.unwatch();
    return spare.upstream;
  }

  /** Closes every spare and opens no more. */
  close(): void {
    this.closed = true;
    clearInterval(this.expiry);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const spare of this.ready.splice(0)) this.discard(spare);
  }

  private dropExpired(): void {
    const now = performance.now();
    let dropped = false;
    for (let i = this.ready.length - 1; i >= 0; i -= 1) {
      const spare = this.ready[i];
      if (spare && now - spare.openedAt >= this.lifetimeMs) {
        this.ready.splice(i, 1);
        this.discard(spare);
        dropped = true;
      }
    }
    if (dropped) this.refill();
  }

  private discard(spare: Spare): void {
    spare.unwatch();
    spare.upstream.socket.destroy();
  }

  private refill(): void {
    if (this.closed) return;
    const wait = this.retryAt - performance.now();
    if (wait > 0) {
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined;
        this.refill();
      }, wait);
      this.retryTimer.unref();
      return;
    }
    while (this.ready.length + this.opening < this.count) {
      this.opening += 1;
      connectUpstream(this.target).then(
        (upstream) => {
          this.opening -= 1;
          if (this.closed) {
            upstream.socket.destroy();
            return;
          }
          this.keep(upstream);
        },
        () => {
          this.opening -= 1;
          this.retryAt = performance.now() + RETRY_MS;
          this.refill();
        },
      );
    }
  }

  private keep(upstream: Upstream): void {
    const { socket } = upstream;
    // The server sends nothing before the startup packet: a close or any byte means this
    // connection is no longer a fresh one (the reader buffers a byte; the socket is dropped).
    const lost = (): void => {
      const at = this.ready.indexOf(spare);
      if (at < 0) return;
      this.ready.splice(at, 1);
      this.discard(spare);
      // A server that ends spares at once (restarting, or a timeout shorter than the lifetime)
      // is not asked again at once.
      if (performance.now() - spare.openedAt < RETRY_MS)
        this.retryAt = performance.now() + RETRY_MS;
      this.refill();
    };
    socket.on('close', lost);
    socket.on('error', lost);
    socket.on('data', lost);
    const spare: Spare = {
      upstream,
      openedAt: performance.now(),
      unwatch: () => {
        socket.off('close', lost);
        socket.off('error', lost);
        socket.off('data', lost);
      },
    };
    this.ready.push(spare);
  }
}
