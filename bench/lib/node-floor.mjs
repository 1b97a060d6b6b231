#!/usr/bin/env node
// A reference for bench/org.mjs, not a proxy: the least a Node.js server can do for one churned
// pgbench connection. It authenticates the client with SCRAM-SHA-256 against a stored verifier
// (the proxy's own ScramServer from dist/, so the same computation as org mode) and answers every
// query with a canned row, with no upstream at all: no pool, no context, no PostgreSQL. Its TPS
// over PgBouncer's in the same run bounds what any Node.js proxy doing the same handshake can
// reach on the machine; org mode does all of this plus the real work.
//
// Usage: node bench/lib/node-floor.mjs <port>, with PGVPD_FLOOR_USER and PGVPD_FLOOR_VERIFIER in
// the environment (the only user it knows). Messages: PostgreSQL protocol 3.0 (§55.7); an
// SSLRequest or GSSENCRequest is refused with 'N', as a server without TLS does.
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'proxy');
const {
  ScramServer,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  newMockSecret,
  scramMechanism,
} = await import(pathToFileURL(join(dist, 'auth', 'scram-server.js')).href);
const send = await import(pathToFileURL(join(dist, 'protocol', 'encode.js')).href);

const port = Number(process.argv[2]);
const user = process.env.PGVPD_FLOOR_USER;
const verifier = process.env.PGVPD_FLOOR_VERIFIER;
if (!Number.isInteger(port) || !user || !verifier) {
  process.stderr.write('usage: PGVPD_FLOOR_USER=… PGVPD_FLOOR_VERIFIER=… node-floor.mjs <port>\n');
  process.exit(2);
}
const mockSecret = newMockSecret();

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

function message(code, ...parts) {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = code.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}
const int16 = (n) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const cstring = (s) => Buffer.from(`${s}\0`);

/** RowDescription + DataRow + CommandComplete + ReadyForQuery for one row of text columns. */
function cannedResult(columns) {
  const description = message(
    'T',
    int16(columns.length),
    ...columns.flatMap(([name]) => [
      cstring(name),
      int32(0), // table oid
      int16(0), // column number
      int32(25), // type oid: text
      int16(-1), // type size
      int32(-1), // type modifier
      int16(0), // text format
    ]),
  );
  const row = message(
    'D',
    int16(columns.length),
    ...columns.flatMap(([, value]) =>
      value === null ? [int32(-1)] : [int32(Buffer.byteLength(value)), Buffer.from(value)],
    ),
  );
  return Buffer.concat([
    description,
    row,
    message('C', cstring('SELECT 1')),
    send.readyForQueryIdle(),
  ]);
}
// pgbench's start-up query about pgbench_accounts' partitions (one table, not partitioned), and
// one value for everything else (its count of pgbench_branches, and each -S select).
const partitionAnswer = cannedResult([
  ['n', '1'],
  ['partstrat', null],
  ['count', '0'],
]);
const valueAnswer = cannedResult([['abalance', '10']]);

createServer((socket) => {
  let pending = Buffer.alloc(0);
  let state = 'startup';
  let scram;
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  socket.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      if (state === 'startup') {
        if (pending.length < 8 || pending.length < pending.readInt32BE(0)) return;
        const length = pending.readInt32BE(0);
        const code = pending.readInt32BE(4);
        const parameters = pending.subarray(8, length).toString('utf8').split('\0');
        pending = pending.subarray(length);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          socket.write('N');
          continue;
        }
        const named = parameters[parameters.indexOf('user') + 1];
        scram = ScramServer.forUser(named, named === user ? verifier : undefined, mockSecret);
        socket.write(send.authenticationSASL([scramMechanism]));
        state = 'sasl-initial';
        continue;
      }
      if (pending.length < 5 || pending.length < 1 + pending.readInt32BE(1)) return;
      const code = String.fromCharCode(pending[0]);
      const end = 1 + pending.readInt32BE(1);
      const body = pending.subarray(5, end);
      pending = pending.subarray(end);
      if (state === 'sasl-initial') {
        const initial = decodeSASLInitialResponse(body);
        socket.write(
          send.authenticationSASLContinue(
            scram.receiveClientFirst(initial.mechanism, initial.data),
          ),
        );
        state = 'sasl-final';
      } else if (state === 'sasl-final') {
        const outcome = scram.receiveClientFinal(decodeSASLResponse(body));
        if (!outcome.ok) {
          socket.end(
            send.errorResponse({
              severity: 'FATAL',
              code: '28P01',
              message: outcome.error.message,
            }),
          );
          return;
        }
        socket.write(
          Buffer.concat([
            send.authenticationSASLFinal(outcome.serverFinal),
            send.authenticationOk(),
            send.backendKeyData(1, 1),
            send.readyForQueryIdle(),
          ]),
        );
        state = 'ready';
      } else if (code === 'X') {
        socket.end();
        return;
      } else if (code === 'Q') {
        socket.write(body.includes('pg_class') ? partitionAnswer : valueAnswer);
      } else {
        socket.end(
          send.errorResponse({
            severity: 'FATAL',
            code: '08P01',
            message: `unexpected message ${code}`,
          }),
        );
        return;
      }
    }
  });
}).listen(port, '127.0.0.1');
