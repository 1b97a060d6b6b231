// Opening a connection to the upstream PostgreSQL: TCP with Nagle off, then optionally TLS
// negotiated the PostgreSQL way (SSLRequest, 'S', handshake; §55.2.10). Failures become the
// 08006 errors that name host:port, never a silent close.
import { isIP, connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { serialize } from '../protocol/encode.js';
import { proxyErrors } from '../errors.js';
import { PacketReader } from '../protocol/reader.js';

export interface UpstreamTarget {
  host: string;
  port: number;
  tls: boolean;
  /** Verify the server certificate and its name (on by default). */
  tlsVerify: boolean;
  /** PEM of the CA to trust instead of the system store. */
  tlsCa: string | undefined;
}

export interface Upstream {
  socket: Socket | TLSSocket;
  reader: PacketReader;
}

export async function connectUpstream(target: UpstreamTarget): Promise<Upstream> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const raw = tcpConnect({ host: target.host, port: target.port, noDelay: true });
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(
        proxyErrors.upstreamUnreachable(target.host, target.port, error.code ?? error.message),
      );
    };
    raw.once('error', onError);
    raw.once('connect', () => {
      raw.off('error', onError);
      resolve(raw);
    });
  });
  const reader = new PacketReader(socket);
  if (!target.tls) return { socket, reader };

  socket.write(serialize.requestSsl());
  let answer: number;
  try {
    answer = await reader.byte();
  } catch {
    socket.destroy();
    throw proxyErrors.upstreamTls(target.host, target.port, 'connection closed during SSLRequest');
  }
  if (answer !== 0x53 || reader.pending > 0) {
    socket.destroy();
    throw proxyErrors.upstreamTls(
      target.host,
      target.port,
      answer === 0x4e
        ? 'the server does not accept TLS connections'
        : 'unexpected answer to SSLRequest',
    );
  }
  reader.release();
  const secure = await new Promise<TLSSocket>((resolve, reject) => {
    const tlsSocket = tlsConnect({
      socket,
      ...(isIP(target.host) === 0 ? { servername: target.host } : {}),
      ...(target.tlsCa === undefined ? {} : { ca: target.tlsCa }),
      rejectUnauthorized: target.tlsVerify,
    });
    tlsSocket.once('error', (error: Error) => {
      socket.destroy();
      reject(proxyErrors.upstreamTls(target.host, target.port, error.message));
    });
    tlsSocket.once('secureConnect', () => {
      tlsSocket.removeAllListeners('error');
      resolve(tlsSocket);
    });
  });
  secure.setNoDelay(true);
  reader.switchTo(secure);
  secure.resume();
  return { socket: secure, reader };
}

/** Sends a CancelRequest for an upstream backend on a connection of its own (§55.2.9). */
export async function sendCancel(
  target: UpstreamTarget,
  processId: number,
  secretKey: number,
): Promise<void> {
  const { socket, reader } = await connectUpstream(target);
  reader.release();
  await new Promise<void>((resolve) => {
    socket.once('close', () => {
      resolve();
    });
    socket.once('error', () => {
      resolve();
    });
    socket.end(serialize.cancel(processId, secretKey));
    socket.resume();
  });
}
