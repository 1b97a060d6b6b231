// The first packet of a connection: decodeStartup on bodies built from their parts, and the
// reader's bound on the declared length, which is checked before any body byte is awaited.
import { PassThrough } from 'node:stream';
import { serialize } from '../../proxy/protocol/encode.js';
import t from 'tap';
import { PacketReader, ProtocolViolation } from '../../proxy/protocol/reader.js';
import { decodeStartup, type StartupPacket } from '../../proxy/protocol/startup.js';
import {
  cancelRequest,
  cstring,
  gssencRequest,
  int32,
  requestCode,
  sslRequest,
  startupBody,
  startupMessage,
} from '../support/wire.js';

/** The body the reader hands to decodeStartup: the packet without its length. */
const bodyOf = (packet: Buffer): Buffer => packet.subarray(4);

t.test('well-formed packets decode to their kind and contents', (t) => {
  const key = Buffer.from([1, 2, 3, 4]);
  const longKey = Buffer.alloc(256, 7);
  const cases: { name: string; body: Buffer; expected: StartupPacket }[] = [
    {
      name: 'a 3.0 StartupMessage with user and database',
      body: startupBody({ user: 'app_user.acme', database: 'app' }),
      expected: {
        kind: 'startup',
        version: 196608,
        parameters: new Map([
          ['user', 'app_user.acme'],
          ['database', 'app'],
        ]),
        protocolOptions: [],
      },
    },
    {
      name: "pg-protocol's own StartupMessage",
      body: bodyOf(serialize.startup({ user: 'u', application_name: 'psql' })),
      expected: {
        kind: 'startup',
        version: 196608,
        parameters: new Map([
          ['user', 'u'],
          ['application_name', 'psql'],
          ['client_encoding', 'UTF8'],
        ]),
        protocolOptions: [],
      },
    },
    {
      name: 'a 3.2 StartupMessage with _pq_ options kept apart from parameters',
      body: startupBody(
        { user: 'u', '_pq_.foo': 'on', '_pq_.bar': '1', database: 'd' },
        { major: 3, minor: 2 },
      ),
      expected: {
        kind: 'startup',
        version: (3 << 16) | 2,
        parameters: new Map([
          ['user', 'u'],
          ['database', 'd'],
        ]),
        protocolOptions: ['_pq_.foo', '_pq_.bar'],
      },
    },
    {
      name: 'a StartupMessage with no parameters',
      body: startupBody({}),
      expected: { kind: 'startup', version: 196608, parameters: new Map(), protocolOptions: [] },
    },
    {
      name: 'a parameter value in UTF-8 with an empty value next to it',
      body: startupBody({ user: 'ütf.acme', options: '' }),
      expected: {
        kind: 'startup',
        version: 196608,
        parameters: new Map([
          ['user', 'ütf.acme'],
          ['options', ''],
        ]),
        protocolOptions: [],
      },
    },
    { name: 'an SSLRequest', body: bodyOf(sslRequest()), expected: { kind: 'ssl' } },
    {
      name: "pg-protocol's SSLRequest",
      body: bodyOf(serialize.requestSsl()),
      expected: { kind: 'ssl' },
    },
    { name: 'a GSSENCRequest', body: bodyOf(gssencRequest()), expected: { kind: 'gssenc' } },
    {
      name: 'a 3.0 CancelRequest with a four-byte key',
      body: bodyOf(cancelRequest(4242, key)),
      expected: { kind: 'cancel', processId: 4242, secretKey: key },
    },
    {
      name: "pg-protocol's CancelRequest",
      body: bodyOf(serialize.cancel(77, 0x01020304)),
      expected: { kind: 'cancel', processId: 77, secretKey: key },
    },
    {
      name: 'a 3.2 CancelRequest with the longest key, 256 bytes',
      body: bodyOf(cancelRequest(1, longKey)),
      expected: { kind: 'cancel', processId: 1, secretKey: longKey },
    },
  ];
  for (const c of cases)
    t.same(
      outcome(() => decodeStartup(c.body)),
      c.expected,
      c.name,
    );
  t.end();
});

t.test('malformed packets are protocol violations naming the problem', (t) => {
  const layout = 'invalid startup packet layout: expected terminator as last byte';
  const cases: { name: string; body: Buffer; message: string }[] = [
    {
      name: 'protocol 2.0',
      body: startupBody({ user: 'u' }, { major: 2, minor: 0 }),
      message: 'unsupported frontend protocol 2.0: server supports 3.0',
    },
    {
      name: 'protocol 4.0',
      body: startupBody({ user: 'u' }, { major: 4, minor: 0 }),
      message: 'unsupported frontend protocol 4.0: server supports 3.0',
    },
    {
      name: 'protocol 65535.0, whose version has the sign bit set',
      body: startupBody({ user: 'u' }, { major: 0xffff, minor: 0 }),
      message: 'unsupported frontend protocol 65535.0: server supports 3.0',
    },
    {
      name: 'a request code no one defined, 1234.5681',
      body: int32((1234 << 16) | 5681),
      message: 'unsupported frontend protocol 1234.5681: server supports 3.0',
    },
    {
      name: 'a parameter list without its final terminator',
      body: Buffer.concat([int32(196608), cstring('user'), cstring('u')]),
      message: layout,
    },
    {
      name: 'a parameter name without its terminator',
      body: Buffer.concat([int32(196608), Buffer.from('user')]),
      message: layout,
    },
    {
      name: 'a value without its terminator',
      body: Buffer.concat([int32(196608), cstring('user'), Buffer.from('u')]),
      message: layout,
    },
    {
      name: 'bytes after the terminator',
      body: Buffer.concat([startupBody({ user: 'u' }), Buffer.from('tail')]),
      message: layout,
    },
    {
      name: 'only a version, nothing after it',
      body: int32(196608),
      message: layout,
    },
    {
      name: 'an SSLRequest with trailing bytes',
      body: Buffer.concat([int32(requestCode.ssl), int32(0)]),
      message: 'invalid length of SSLRequest',
    },
    {
      name: 'a GSSENCRequest with trailing bytes',
      body: Buffer.concat([int32(requestCode.gssenc), Buffer.from([0])]),
      message: 'invalid length of GSSENCRequest',
    },
    {
      name: 'a CancelRequest without a secret key',
      body: Buffer.concat([int32(requestCode.cancel), int32(1)]),
      message: 'invalid length of CancelRequest',
    },
    {
      name: 'a CancelRequest with a key of 257 bytes',
      body: bodyOf(cancelRequest(1, Buffer.alloc(257))),
      message: 'invalid length of CancelRequest',
    },
  ];
  for (const c of cases) {
    const error = outcome(() => decodeStartup(c.body));
    t.ok(error instanceof ProtocolViolation, `${c.name}: is a ProtocolViolation`);
    t.match(error, { message: c.message }, c.name);
  }
  t.end();
});

t.test('the reader bounds the declared length before waiting for the body', async (t) => {
  const cases: { name: string; bytes: Buffer; message: string }[] = [
    {
      name: 'a negative length',
      bytes: int32(-1),
      message: 'invalid length of startup packet: -1',
    },
    { name: 'a length of zero', bytes: int32(0), message: 'invalid length of startup packet: 0' },
    {
      name: 'a length of 7, shorter than length and code',
      bytes: Buffer.concat([int32(7), Buffer.alloc(3)]),
      message: 'invalid length of startup packet: 7',
    },
    {
      name: 'a length of 10,001, one over the limit',
      bytes: int32(10_001),
      message: 'invalid length of startup packet: 10001',
    },
    {
      name: 'the largest int32 length',
      bytes: int32(0x7fffffff),
      message: 'invalid length of startup packet: 2147483647',
    },
  ];
  for (const c of cases) {
    const socket = new PassThrough();
    const reader = new PacketReader(socket);
    // Only the length is written: the refusal must not wait for a body that never comes.
    socket.write(c.bytes);
    await t.rejects(
      reader.startupPacket(),
      { name: 'ProtocolViolation', message: c.message },
      c.name,
    );
  }
});

t.test('the reader returns a whole packet however it is split', async (t) => {
  const packet = startupMessage({ user: 'app_user.acme', database: 'app' });
  const cases: { name: string; chunks: Buffer[] }[] = [
    { name: 'in one write', chunks: [packet] },
    { name: 'byte by byte', chunks: [...packet].map((byte) => Buffer.from([byte])) },
    { name: 'split inside the length', chunks: [packet.subarray(0, 2), packet.subarray(2)] },
    {
      name: 'with the next packet in the same write',
      chunks: [Buffer.concat([packet, sslRequest()])],
    },
  ];
  for (const c of cases) {
    const socket = new PassThrough();
    const reader = new PacketReader(socket);
    const read = reader.startupPacket();
    for (const chunk of c.chunks) socket.write(chunk);
    t.same(await read, bodyOf(packet), c.name);
  }
});

t.test('the largest packet allowed, 10,000 bytes, is read whole', async (t) => {
  const filler = 'x'.repeat(10_000 - startupMessage({ user: 'u', pad: '' }).length);
  const packet = startupMessage({ user: 'u', pad: filler });
  t.equal(packet.length, 10_000, 'the packet is exactly at the limit');
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  socket.write(packet);
  const body = await reader.startupPacket();
  t.same(
    outcome(() => decodeStartup(body)),
    {
      kind: 'startup',
      version: 196608,
      parameters: new Map([
        ['user', 'u'],
        ['pad', filler],
      ]),
      protocolOptions: [],
    },
  );
});

t.test('a packet cut short by the peer closing is a PeerClosed, not a packet', async (t) => {
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  const packet = startupMessage({ user: 'u' });
  socket.end(packet.subarray(0, packet.length - 3));
  await t.rejects(reader.startupPacket(), { name: 'PeerClosed' });
});

t.test("the test's packet builders agree with pg-protocol's serializer", (t) => {
  t.same(sslRequest(), serialize.requestSsl(), 'SSLRequest');
  t.same(cancelRequest(77, int32(0x01020304)), serialize.cancel(77, 0x01020304), 'CancelRequest');
  t.same(
    startupMessage({ user: 'u', database: 'd', client_encoding: 'UTF8' }),
    serialize.startup({ user: 'u', database: 'd' }),
    'StartupMessage',
  );
  t.end();
});

/** What `fn` returns, or what it throws, so that one failing case does not hide the others. */
function outcome(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (error) {
    return error;
  }
}
