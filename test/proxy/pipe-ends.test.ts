// The dedicated pipe carries every byte in order both ways, also through a reader that stops
// (back-pressure), over TCP and TLS; it always ends, and a drain always finishes: a client that
// left while its context was being set ends the pipe at once (no event is left to fire), and at
// the end of a drain a client that does not read is cut (its socket destroyed, its backend
// closed) rather than waited for. A fake upstream stands in for PostgreSQL: a bypass user needs
// no context.
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import * as tls from 'node:tls';
import t from 'tap';
import { testCertificates } from '../support/postgres.js';
import { loadConfig } from '../../proxy/config.js';
import { startProxy } from '../../proxy/index.js';
import { createLogger } from '../../proxy/logger.js';
import { pipe } from '../../proxy/session/pipe.js';

function message(code: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(code, 0, 'ascii');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

function int32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeInt32BE(value);
  return out;
}

async function listening(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

async function connected(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) =>
    socket.once('connect', () => {
      resolve();
    }),
  );
  return socket;
}

/** The far ends of a pipe: what a client and PostgreSQL would hold. */
interface PipedPair {
  farClient: Socket;
  farUpstream: Socket;
  close(): void;
}

/**
 * Joins a proxy-side client socket and a proxy-side upstream socket with pipe(), over TCP or,
 * with `secure`, TLS on both legs (the proxy's sockets then are TLSSockets, as in production).
 */
async function pipedPair(secure: boolean): Promise<PipedPair> {
  const certs = await testCertificates();
  const serverOptions = { cert: certs.serverCertPem, key: certs.serverKeyPem };
  const clientOptions = { ca: certs.caCertPem, servername: 'localhost' };
  const accept = (): Promise<{ server: Server; socket: Promise<Socket>; port: number }> => {
    let take: (socket: Socket) => void = () => undefined;
    const socket = new Promise<Socket>((resolve) => (take = resolve));
    const server = secure
      ? tls.createServer(serverOptions, (s) => {
          take(s);
        })
      : createServer((s) => {
          take(s);
        });
    return listening(server).then((port) => ({ server, socket, port }));
  };
  const dial = async (port: number): Promise<Socket> => {
    const socket = secure
      ? tls.connect({ port, host: '127.0.0.1', ...clientOptions })
      : connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) =>
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        resolve();
      }),
    );
    return socket;
  };
  const front = await accept();
  const back = await accept();
  const farClient = await dial(front.port);
  const proxyClient = await front.socket;
  const proxyUpstream = await dial(back.port);
  const farUpstream = await back.socket;
  for (const s of [proxyClient, farUpstream]) s.on('error', () => undefined);
  const attachment = pipe({
    client: proxyClient,
    clientEarly: Buffer.alloc(0),
    upstream: proxyUpstream,
    upstreamLate: Buffer.alloc(0),
    backendPid: 1,
    database: 'd',
    role: 'r',
    control: undefined,
  });
  return {
    farClient,
    farUpstream,
    close() {
      attachment.stop();
      for (const s of [farClient, proxyClient, proxyUpstream, farUpstream]) s.destroy();
      front.server.close();
      back.server.close();
    },
  };
}

/** Writes `total` random bytes in 64 KiB chunks as fast as the socket takes them; their SHA-256. */
async function sendRandom(socket: Socket, total: number): Promise<string> {
  const hash = createHash('sha256');
  for (let sent = 0; sent < total;) {
    const chunk = randomBytes(Math.min(65_536, total - sent));
    hash.update(chunk);
    sent += chunk.length;
    if (!socket.write(chunk))
      await new Promise<void>((resolve) =>
        socket.once('drain', () => {
          resolve();
        }),
      );
  }
  return hash.digest('hex');
}

/** Reads nothing for `stopMs`, then reads `total` bytes; their SHA-256. */
async function receiveAfterStop(socket: Socket, total: number, stopMs: number): Promise<string> {
  socket.pause();
  await new Promise((resolve) => setTimeout(resolve, stopMs));
  const hash = createHash('sha256');
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
      if (received >= total) resolve();
    });
    socket.once('close', () => {
      reject(new Error(`closed after ${received} of ${total} bytes`));
    });
    socket.resume();
  });
  return hash.digest('hex');
}

for (const secure of [false, true]) {
  const leg = secure ? 'TLS' : 'TCP';
  t.test(
    `${leg}: 24 MB each way arrive whole and in order through a reader that stops`,
    async (t) => {
      const pair = await pipedPair(secure);
      t.teardown(() => {
        pair.close();
      });
      const total = 24 * 1024 * 1024;
      // The far upstream answers at full speed while the far client reads nothing for 300 ms:
      // the proxy's writes to the client fill up and the upstream's reading must stop and resume.
      const [down, downSeen] = await Promise.all([
        sendRandom(pair.farUpstream, total),
        receiveAfterStop(pair.farClient, total, 300),
      ]);
      t.equal(downSeen, down, 'upstream → client: every byte, in order');
      const [up, upSeen] = await Promise.all([
        sendRandom(pair.farClient, total),
        receiveAfterStop(pair.farUpstream, total, 300),
      ]);
      t.equal(upSeen, up, 'client → upstream: every byte, in order');
    },
  );
}

t.test('a pipe whose client is already gone ends at once, and closes its backend', async (t) => {
  const accepted: Socket[] = [];
  const server = createServer((socket) => accepted.push(socket.on('error', () => undefined)));
  const port = await listening(server);
  t.teardown(() => server.close());
  const client = await connected(port);
  const upstream = await connected(port);
  client.destroy();
  await new Promise<void>((resolve) =>
    client.once('close', () => {
      resolve();
    }),
  );
  const attachment = pipe({
    client,
    clientEarly: Buffer.alloc(0),
    upstream,
    upstreamLate: Buffer.alloc(0),
    backendPid: 1,
    database: 'd',
    role: 'r',
    control: undefined,
  });
  t.equal(await attachment.ended, 'client-closed');
  await attachment.release('client-closed');
  t.ok(upstream.destroyed, 'the backend connection is closed');
});

t.test('the end of a drain cuts a client that does not read', async (t) => {
  const upstreams: Socket[] = [];
  // Authenticates anyone, then answers any query with 24 MB of rows.
  const fake = createServer((socket) => {
    upstreams.push(socket);
    socket.on('error', () => undefined);
    let first = true;
    socket.on('data', () => {
      if (first) {
        first = false;
        socket.write(
          Buffer.concat([
            message('R', int32(0)),
            message('K', Buffer.concat([int32(4242), int32(99)])),
            message('Z', Buffer.from('I')),
          ]),
        );
        return;
      }
      const row = message('D', Buffer.alloc(60_000, 1));
      for (let i = 0; i < 400; i++) socket.write(row);
    });
  });
  const upstreamPort = await listening(fake);
  t.teardown(() => {
    for (const socket of upstreams) socket.destroy();
    fake.close();
  });
  const config = loadConfig({
    flags: {
      port: 0,
      upstream_host: '127.0.0.1',
      upstream_port: upstreamPort,
      // Nothing listens there: the request to end the backend fails, as for a bypass superuser.
      control_url: 'postgresql://pgvpd_proxy@127.0.0.1:1/none',
      superuser_bypass: 'root',
      bypass_networks: '127.0.0.1/32',
      log_level: 'silent',
    },
  });
  const proxy = await startProxy(config, { logger: createLogger('silent') });
  const client = await connected(proxy.port);
  t.teardown(() => client.destroy());
  const startup = Buffer.concat([int32(196608), Buffer.from('user\0root\0database\0d\0\0')]);
  client.write(Buffer.concat([int32(startup.length + 4), startup]));
  await new Promise<void>((resolve) =>
    client.once('data', () => {
      resolve();
    }),
  );
  client.pause();
  client.write(message('Q', Buffer.from('select big\0')));
  await new Promise((resolve) => setTimeout(resolve, 300));
  await proxy.close(0);
  t.equal(proxy.sessionCount(), 0, 'the drain finished with no session left');
  const backend = upstreams[0];
  if (backend === undefined) throw new Error('no upstream connection');
  if (!backend.destroyed)
    await new Promise<void>((resolve) =>
      backend.once('close', () => {
        resolve();
      }),
    );
  t.ok(backend.destroyed, 'the backend connection is closed');
});
