// What a client can send before it is authenticated, through raw sockets: bad lengths, cut
// packets, garbage, protocol versions and encryption requests in odd orders. Each case ends with
// a FATAL ErrorResponse (read and checked: SQLSTATE and message) and a close, or with a silent
// close where the client left first; nothing reaches the upstream before a valid startup packet;
// and a good client is served right after, so the process survived.
import { createHash } from 'node:crypto';
import t, { type Test } from 'tap';
import { serverInfo, testCertificates } from '../support/postgres.js';
import {
  WireClient,
  authCodeOf,
  cancelRequest,
  countingRelay,
  cstring,
  gssencRequest,
  int32,
  negotiationOf,
  queryMessage,
  sslRequest,
  startupMessage,
  terminateMessage,
  typedMessage,
  untypedPacket,
  type CountingRelay,
} from '../support/wire.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';

/** Deterministic bytes that look random: SHA-256 in counter mode over a seed. */
function garbage(seed: string, length: number): Buffer {
  const blocks: Buffer[] = [];
  for (let i = 0; blocks.length * 32 < length; i++) {
    blocks.push(
      createHash('sha256')
        .update(`${seed}/${String(i)}`)
        .digest(),
    );
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** PostgreSQL's rule for the first int32 of a connection (MAX_STARTUP_PACKET_LENGTH 10000). */
function invalidLength(bytes: Buffer): string {
  const length = bytes.readInt32BE(0);
  if (length >= 8 && length <= 10_000)
    throw new Error(`seed gives a valid length ${String(length)}`);
  return `invalid length of startup packet: ${String(length)}`;
}

/** Protocol version printed as PostgreSQL prints it: both halves unsigned. */
function unsupportedVersion(code: number): string {
  return `unsupported frontend protocol ${String(code >>> 16)}.${String(code & 0xffff)}: server supports 3.0`;
}

interface Proxies {
  relay: CountingRelay;
  /** No TLS, handshake_timeout 10 s. */
  plain: ProxyFixture;
  /** tls_cert/tls_key set. */
  tls: ProxyFixture;
  /** handshake_timeout 3 s: long enough for a good client on a loaded machine. */
  slow: ProxyFixture;
  caPem: string;
}

async function proxies(t: Test): Promise<Proxies> {
  const server = await serverInfo();
  const relay = await countingRelay({ host: server.host, port: server.port });
  t.teardown(() => relay.close());
  const upstream = { upstream_host: '127.0.0.1', upstream_port: relay.port };
  const plain = await proxyFixture(t, upstream);
  const certs = await testCertificates();
  const tls = await proxyFixture(
    t,
    { ...upstream, tls_cert: certs.serverCert, tls_key: certs.serverKey },
    { db: plain.db },
  );
  const slow = await proxyFixture(t, { ...upstream, handshake_timeout: 3 }, { db: plain.db });
  return { relay, plain, tls, slow, caPem: certs.caCertPem };
}

/** A good client right after: the proxy is still up and still isolates tenants. */
async function goodClientServed(t: Test, f: ProxyFixture, caPem?: string): Promise<void> {
  const acme = await f.connect(
    f.userFor('acme'),
    undefined,
    caPem === undefined ? {} : { ssl: { ca: caPem } },
  );
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'a good client is served after');
  await acme.end();
}

// One database and three proxies for the whole file; each case counts upstream connections as a
// difference, so the cases do not depend on each other.
const p = await proxies(t);

t.test('malformed first packets end in a FATAL 08P01 or a close', async (t) => {
  const packet = startupMessage({ user: p.plain.userFor('acme'), database: p.plain.db.name });
  const httpRequest = Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', 'latin1');
  const negativeGarbage = garbage('pgvpd garbage 1', 64);
  const hugeGarbage = garbage('pgvpd garbage 2', 512);
  const garbageBody = garbage('pgvpd garbage 3', 28);
  const cases: {
    name: string;
    proxy: 'plain' | 'tls' | 'slow';
    /** Written in one write. */
    bytes: Buffer;
    /** Half-close after writing. */
    thenEnd?: boolean;
    outcome: { code: string; message: string; hint?: string } | 'close';
  }[] = [
    {
      name: 'a negative length',
      proxy: 'plain',
      bytes: Buffer.concat([int32(-1), packet.subarray(4)]),
      outcome: { code: '08P01', message: 'invalid length of startup packet: -1' },
    },
    {
      name: 'a length shorter than length and version',
      proxy: 'plain',
      bytes: Buffer.concat([int32(4), int32(196608)]),
      outcome: { code: '08P01', message: 'invalid length of startup packet: 4' },
    },
    {
      name: 'a length of 10,001, just over the limit, with nothing behind it',
      proxy: 'plain',
      bytes: int32(10_001),
      outcome: { code: '08P01', message: 'invalid length of startup packet: 10001' },
    },
    {
      name: 'a huge length of 2 GiB',
      proxy: 'plain',
      bytes: Buffer.concat([int32(0x7fffffff), packet.subarray(4)]),
      outcome: { code: '08P01', message: 'invalid length of startup packet: 2147483647' },
    },
    {
      name: 'a truncated packet, then the client closes',
      proxy: 'plain',
      bytes: Buffer.concat([int32(100), packet.subarray(4, 20)]),
      thenEnd: true,
      outcome: 'close',
    },
    {
      name: 'a truncated packet, then silence until the handshake timeout',
      proxy: 'slow',
      bytes: Buffer.concat([int32(100), packet.subarray(4, 20)]),
      outcome: {
        code: '08006',
        message: 'handshake timed out during startup after 3 s',
        hint: 'Raise handshake_timeout if the upstream is slow to authenticate.',
      },
    },
    {
      name: 'random bytes whose first int32 is negative',
      proxy: 'plain',
      bytes: negativeGarbage,
      outcome: { code: '08P01', message: invalidLength(negativeGarbage) },
    },
    {
      name: 'random bytes whose first int32 is huge',
      proxy: 'plain',
      bytes: hugeGarbage,
      outcome: { code: '08P01', message: invalidLength(hugeGarbage) },
    },
    {
      name: 'random bytes behind a valid length',
      proxy: 'plain',
      bytes: untypedPacket(garbageBody),
      outcome: { code: '08P01', message: unsupportedVersion(garbageBody.readInt32BE(0)) },
    },
    {
      name: 'an HTTP request',
      proxy: 'plain',
      bytes: httpRequest,
      outcome: { code: '08P01', message: invalidLength(httpRequest) },
    },
    {
      name: 'protocol 2.0',
      proxy: 'plain',
      bytes: startupMessage({ user: p.plain.userFor('acme') }, { major: 2, minor: 0 }),
      outcome: { code: '08P01', message: 'unsupported frontend protocol 2.0: server supports 3.0' },
    },
    {
      name: 'a startup packet without its terminator',
      proxy: 'plain',
      bytes: untypedPacket(Buffer.concat([int32(196608), cstring('user'), cstring('x.acme')])),
      outcome: {
        code: '08P01',
        message: 'invalid startup packet layout: expected terminator as last byte',
      },
    },
    {
      name: 'a startup packet without a user',
      proxy: 'plain',
      bytes: startupMessage({ database: p.plain.db.name }),
      outcome: { code: '28000', message: 'no PostgreSQL user name specified in startup packet' },
    },
    {
      name: 'a startup packet with an empty user',
      proxy: 'plain',
      bytes: startupMessage({ user: '', database: p.plain.db.name }),
      outcome: { code: '28000', message: 'no PostgreSQL user name specified in startup packet' },
    },
    {
      name: 'plaintext right after an SSLRequest, in the same write, when TLS is configured',
      proxy: 'tls',
      bytes: Buffer.concat([sslRequest(), packet]),
      outcome: { code: '08P01', message: 'received unencrypted data after SSL request' },
    },
    {
      name: 'an SSLRequest with a trailing byte',
      proxy: 'tls',
      bytes: untypedPacket(Buffer.concat([sslRequest().subarray(4), Buffer.from([0])])),
      outcome: { code: '08P01', message: 'invalid length of SSLRequest' },
    },
    {
      name: 'a CancelRequest for a backend the proxy never issued',
      proxy: 'plain',
      bytes: cancelRequest(4242, int32(4242)),
      outcome: 'close',
    },
  ];

  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const f = p[c.proxy];
      const before = p.relay.connections();
      const client = await WireClient.connect(f.proxy.port);
      t.teardown(() => {
        client.destroy();
      });
      client.write(c.bytes);
      if (c.thenEnd === true) client.end();
      if (c.outcome === 'close') {
        await client.closed();
        t.equal(client.pending, 0, 'the proxy closed without a word');
      } else {
        const error = await client.readError();
        t.same(
          error,
          {
            severity: 'FATAL',
            severityV: 'FATAL',
            code: c.outcome.code,
            message: c.outcome.message,
            detail: undefined,
            hint: c.outcome.hint,
          },
          'FATAL with the expected SQLSTATE and message',
        );
        await client.closed();
        t.equal(client.pending, 0, 'nothing follows the ErrorResponse');
      }
      t.equal(p.relay.connections(), before, 'nothing reached the upstream');
      await goodClientServed(t, f, c.proxy === 'tls' ? p.caPem : undefined);
    });
  }
});

t.test('a request for encryption the proxy does not offer is refused with N', async (t) => {
  const cases: { name: string; proxy: 'plain' | 'tls'; request: Buffer }[] = [
    { name: 'an SSLRequest without TLS configured', proxy: 'plain', request: sslRequest() },
    { name: 'a GSSENCRequest', proxy: 'plain', request: gssencRequest() },
    { name: 'a GSSENCRequest when TLS is configured', proxy: 'tls', request: gssencRequest() },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const f = p[c.proxy];
      const client = await WireClient.connect(f.proxy.port);
      t.teardown(() => {
        client.destroy();
      });
      client.write(c.request);
      t.equal(await client.readByte(), 'N', 'answered N');
      t.equal(client.pending, 0, 'and nothing else');
      client.write(startupMessage({ user: f.userFor('acme'), database: f.db.name }));
      await client.authenticate(f.app.password);
      t.same(
        await client.query('select pgvpd.current_tenant_id()'),
        [['acme']],
        'the same connection then logs in in plaintext as its tenant',
      );
      client.end(terminateMessage());
      await client.closed();
    });
  }
});

t.test('a third encryption request on one connection is a protocol violation', async (t) => {
  const before = p.relay.connections();
  const client = await WireClient.connect(p.plain.proxy.port);
  t.teardown(() => {
    client.destroy();
  });
  client.write(sslRequest());
  t.equal(await client.readByte(), 'N', 'the SSLRequest is refused');
  client.write(gssencRequest());
  t.equal(await client.readByte(), 'N', 'the GSSENCRequest is refused');
  client.write(sslRequest());
  t.match(await client.readError(), {
    severity: 'FATAL',
    code: '08P01',
    message: 'unexpected encryption request',
  });
  await client.closed();
  t.equal(p.relay.connections(), before, 'nothing reached the upstream');
  await goodClientServed(t, p.plain);
});

t.test('a newer protocol or a _pq_ option is answered with NegotiateProtocolVersion', async (t) => {
  const f = p.plain;
  const cases: {
    name: string;
    version: { major: number; minor: number };
    options: Record<string, string>;
  }[] = [
    {
      name: 'protocol 3.1 with _pq_.foo',
      version: { major: 3, minor: 1 },
      options: { '_pq_.foo': 'bar' },
    },
    { name: 'protocol 3.2 with no options', version: { major: 3, minor: 2 }, options: {} },
    {
      name: 'protocol 3.0 with two _pq_ options',
      version: { major: 3, minor: 0 },
      options: { '_pq_.a': '1', '_pq_.b': '2' },
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const client = await WireClient.connect(f.proxy.port);
      t.teardown(() => {
        client.destroy();
      });
      client.write(
        startupMessage({ user: f.userFor('globex'), ...c.options, database: f.db.name }, c.version),
      );
      t.same(
        negotiationOf(await client.readFrame()),
        { newestMinor: 0, unsupported: Object.keys(c.options) },
        'the first answer is v: minor 0 and the options not supported',
      );
      const frames = await client.authenticate(f.app.password);
      t.same(
        frames.filter((frame) => frame.code === 'R').map(authCodeOf),
        [10, 11, 12, 0],
        'then the usual SCRAM exchange ends in AuthenticationOk',
      );
      t.equal(frames.filter((frame) => frame.code === 'K').length, 1, 'one BackendKeyData');
      t.equal(frames.at(-1)?.code, 'Z', 'and ReadyForQuery');
      t.same(
        await client.query('select pgvpd.current_tenant_id()'),
        [['globex']],
        'the session runs as its tenant',
      );
      client.end(terminateMessage());
      await client.closed();
    });
  }
});

t.test('malformed messages during authentication end in a FATAL 08P01', async (t) => {
  const f = p.plain;
  const cases: { name: string; bytes: Buffer; message: string }[] = [
    {
      name: 'a password message that declares 1 GB',
      bytes: Buffer.concat([Buffer.from('p'), int32(1_000_000_000)]),
      message: 'invalid message length 1000000000',
    },
    {
      name: 'a message length below its own size',
      bytes: Buffer.concat([Buffer.from('p'), int32(3)]),
      message: 'invalid message length 3',
    },
    {
      name: 'a query instead of a password',
      bytes: queryMessage('select 1'),
      message: 'expected password response, got message type "Q"',
    },
    {
      name: 'random bytes instead of a password',
      bytes: typedMessage('\u00f7', garbage('pgvpd garbage 4', 40)),
      message: 'expected password response, got message type "÷"',
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const client = await WireClient.connect(f.proxy.port);
      t.teardown(() => {
        client.destroy();
      });
      client.write(startupMessage({ user: f.userFor('acme'), database: f.db.name }));
      const request = await client.readFrame();
      t.equal(request.code, 'R', 'the proxy asks for a password');
      t.equal(authCodeOf(request), 10, 'with SASL');
      client.write(c.bytes);
      t.match(await client.readError(), { severity: 'FATAL', code: '08P01', message: c.message });
      await client.closed();
      await goodClientServed(t, f);
    });
  }
});
