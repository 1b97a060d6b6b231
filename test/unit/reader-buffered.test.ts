// PacketReader.bufferedMessage(): a loop reading a burst of upstream answers (a pooled backend's
// reset and readying: pool/statements.ts, pool/switch.ts) takes the messages already buffered
// without a promise each. It returns a message only when the whole of it is buffered, leaves a
// partial one for message() to wait for, keeps the order, and refuses a bad length as message()
// does.
import { PassThrough } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import t from 'tap';
import { typedMessage } from '../support/wire.js';
import { PacketReader, ProtocolViolation } from '../../proxy/protocol/reader.js';

const message = (type: string, body: string): Buffer =>
  typedMessage(type, Buffer.from(body, 'utf8'));

const shown = (m: { code: number; body: Buffer } | undefined): string | undefined =>
  m === undefined ? undefined : `${String.fromCharCode(m.code)}:${m.body.toString()}`;

t.test('whole buffered messages come at once, in order; a partial one waits', async (t) => {
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  t.equal(reader.bufferedMessage(), undefined, 'nothing buffered: undefined');
  const tail = message('Z', 'I');
  socket.write(
    Buffer.concat([message('C', 'ROLLBACK\0'), message('C', 'RESET\0'), tail.subarray(0, 3)]),
  );
  await tick();
  t.equal(shown(reader.bufferedMessage()), 'C:ROLLBACK\0', 'the first');
  t.equal(shown(reader.bufferedMessage()), 'C:RESET\0', 'the second');
  t.equal(reader.bufferedMessage(), undefined, 'a header cut short: undefined');
  t.equal(reader.pending, 3, 'and its bytes stay buffered');
  const rest = reader.message();
  socket.write(tail.subarray(3, 5));
  await tick();
  t.equal(reader.bufferedMessage(), undefined, 'a header without its body: undefined');
  socket.write(tail.subarray(5));
  t.equal(shown(await rest), 'Z:I', 'message() gets the rest once it came');
  t.equal(reader.pending, 0);
});

t.test('a bad length is refused as message() refuses it', async (t) => {
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  const bad = Buffer.from([0x43, 0, 0, 0, 2]);
  socket.write(bad);
  await tick();
  t.throws(() => reader.bufferedMessage(), new ProtocolViolation('invalid message length 2'));
  const big = Buffer.from([0x44, 0x7f, 0, 0, 0]);
  const other = new PassThrough();
  const second = new PacketReader(other);
  other.write(big);
  await tick();
  t.throws(
    () => second.bufferedMessage(1024),
    new ProtocolViolation(`invalid message length ${String(0x7f000000)}`),
  );
});
