// The proxy's own backend messages, read back by pg-protocol's parser (the one node-postgres
// clients use): what the proxy writes is what a driver understands.
import t from 'tap';
import * as send from '../../proxy/protocol/encode.js';
import { errorFieldsOf, negotiationOf, parseBackend, type Frame } from '../support/wire.js';

/** Splits a buffer into frames by their declared lengths. */
function framesOf(bytes: Buffer): Frame[] {
  const frames: Frame[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const length = bytes.readInt32BE(offset + 1);
    const raw = bytes.subarray(offset, offset + 1 + length);
    frames.push({ code: String.fromCharCode(raw[0] ?? 0), body: raw.subarray(5), raw });
    offset += 1 + length;
  }
  if (offset !== bytes.length) throw new Error('declared lengths overrun the buffer');
  return frames;
}

t.test('an ErrorResponse round-trips through the parser with every field', (t) => {
  const cases: {
    name: string;
    fields: Parameters<typeof send.errorResponse>[0];
    expected: Record<string, string>;
  }[] = [
    {
      name: 'severity, code and message only',
      fields: { severity: 'FATAL', code: '08P01', message: 'invalid length of startup packet: -1' },
      expected: { S: 'FATAL', V: 'FATAL', C: '08P01', M: 'invalid length of startup packet: -1' },
    },
    {
      name: 'with a hint',
      fields: {
        severity: 'FATAL',
        code: '28000',
        message: 'invalid pgvpd username "x": no tenant (missing ".")',
        hint: 'Connect as <role>.<tenant>',
      },
      expected: {
        S: 'FATAL',
        V: 'FATAL',
        C: '28000',
        M: 'invalid pgvpd username "x": no tenant (missing ".")',
        H: 'Connect as <role>.<tenant>',
      },
    },
    {
      name: 'an ERROR with detail and hint',
      fields: { severity: 'ERROR', code: 'XX000', message: 'm', detail: 'd', hint: 'h' },
      expected: { S: 'ERROR', V: 'ERROR', C: 'XX000', M: 'm', D: 'd', H: 'h' },
    },
    {
      name: 'a message in multibyte UTF-8',
      fields: { severity: 'FATAL', code: '28000', message: 'tenant "acmé 😀" refusé' },
      expected: { S: 'FATAL', V: 'FATAL', C: '28000', M: 'tenant "acmé 😀" refusé' },
    },
    {
      name: 'an undefined detail, which is left out',
      fields: { severity: 'FATAL', code: '08006', message: 'm', detail: undefined },
      expected: { S: 'FATAL', V: 'FATAL', C: '08006', M: 'm' },
    },
  ];
  for (const c of cases) {
    const bytes = send.errorResponse(c.fields);
    const [frame] = framesOf(bytes);
    t.equal(frame?.code, 'E', `${c.name}: type E`);
    t.same(frame && errorFieldsOf(frame), c.expected, `${c.name}: exactly these fields`);
    const [parsed] = parseBackend(bytes);
    t.match(
      parsed,
      {
        name: 'error',
        severity: c.fields.severity,
        code: c.fields.code,
        message: c.fields.message,
        detail: c.fields.detail,
        hint: c.fields.hint,
      },
      `${c.name}: pg-protocol reads it`,
    );
  }
  t.end();
});

t.test('authentication requests round-trip through the parser', (t) => {
  const cases: { name: string; bytes: Buffer; expected: Record<string, unknown> }[] = [
    {
      name: 'AuthenticationOk',
      bytes: send.authenticationOk(),
      expected: { name: 'authenticationOk' },
    },
    {
      name: 'AuthenticationCleartextPassword',
      bytes: send.authenticationCleartextPassword(),
      expected: { name: 'authenticationCleartextPassword', length: 8 },
    },
    {
      name: 'AuthenticationSASL with one mechanism',
      bytes: send.authenticationSASL(['SCRAM-SHA-256']),
      expected: { name: 'authenticationSASL', mechanisms: ['SCRAM-SHA-256'] },
    },
    {
      name: 'AuthenticationSASL with two mechanisms',
      bytes: send.authenticationSASL(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']),
      expected: { name: 'authenticationSASL', mechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] },
    },
  ];
  for (const c of cases) {
    t.equal(framesOf(c.bytes).length, 1, `${c.name}: one frame`);
    t.match(parseBackend(c.bytes), [c.expected], c.name);
  }
  t.end();
});

t.test('BackendKeyData round-trips any process id and secret key', (t) => {
  const cases: { name: string; processId: number; secretKey: number }[] = [
    { name: 'small positive values', processId: 1, secretKey: 2 },
    { name: 'the largest int32 values', processId: 0x7fffffff, secretKey: 0x7fffffff },
    { name: 'a negative secret key', processId: 12345, secretKey: -0x80000000 },
  ];
  for (const c of cases) {
    t.match(
      parseBackend(send.backendKeyData(c.processId, c.secretKey)),
      [{ name: 'backendKeyData', processID: c.processId, secretKey: c.secretKey }],
      c.name,
    );
  }
  t.end();
});

t.test('NegotiateProtocolVersion lists the newest minor version and the options', (t) => {
  const cases: { name: string; minor: number; options: string[] }[] = [
    { name: 'no options, only an older minor version', minor: 0, options: [] },
    { name: 'one option', minor: 0, options: ['_pq_.foo'] },
    { name: 'two options', minor: 0, options: ['_pq_.foo', '_pq_.bar'] },
  ];
  for (const c of cases) {
    const [frame, ...rest] = framesOf(send.negotiateProtocolVersion(c.minor, c.options));
    t.equal(rest.length, 0, `${c.name}: one frame`);
    t.equal(frame?.code, 'v', `${c.name}: type v`);
    t.same(frame && negotiationOf(frame), { newestMinor: c.minor, unsupported: c.options }, c.name);
  }
  t.end();
});

t.test('messages written back to back are read as a sequence', (t) => {
  const bytes = Buffer.concat([
    send.authenticationOk(),
    send.backendKeyData(7, 8),
    send.errorResponse({ severity: 'FATAL', code: '57P01', message: 'shutting down' }),
  ]);
  t.match(parseBackend(bytes), [
    { name: 'authenticationOk' },
    { name: 'backendKeyData', processID: 7, secretKey: 8 },
    { name: 'error', code: '57P01', message: 'shutting down' },
  ]);
  t.end();
});

t.test('the answers to SSLRequest and GSSENCRequest are single bytes', (t) => {
  t.equal(send.acceptTls.toString('latin1'), 'S');
  t.equal(send.refuseEncryption.toString('latin1'), 'N');
  t.equal(send.acceptTls.length + send.refuseEncryption.length, 2);
  t.end();
});
