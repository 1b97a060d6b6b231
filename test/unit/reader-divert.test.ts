// PacketReader.divert(): a pooled backend's reader hands its bytes to a transaction link and
// back without touching the socket's listeners (pool/transaction-link.ts). What was buffered comes
// back from divert(); chunks and the peer's end go to the link while diverted; after undivert()
// the reader buffers and reads messages again; switchTo() of the same socket adds no listener.
import { PassThrough } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import t from 'tap';
import { typedMessage } from '../support/wire.js';
import { PacketReader } from '../../proxy/protocol/reader.js';

const message = (type: string, body: string): Buffer =>
  typedMessage(type, Buffer.from(body, 'utf8'));

t.test(
  'divert hands over what was buffered, then every chunk; undivert buffers again',
  async (t) => {
    const socket = new PassThrough();
    const reader = new PacketReader(socket);
    socket.write(message('Z', 'I'));
    await tick();
    t.equal(reader.pending, 6, 'an unread message is buffered');

    const seen: Buffer[] = [];
    let gone = 0;
    const rest = reader.divert(
      (chunk) => seen.push(chunk),
      () => (gone += 1),
    );
    t.same(rest, message('Z', 'I'), 'divert returns the unread bytes');
    t.equal(reader.pending, 0, 'and keeps none');
    socket.write(message('C', 'SELECT 1\0'));
    await tick();
    t.same(Buffer.concat(seen), message('C', 'SELECT 1\0'), 'a chunk goes to the sink');
    t.equal(reader.pending, 0, 'nothing is buffered while diverted');

    reader.undivert();
    socket.write(message('Z', 'T'));
    const read = await reader.message();
    t.same(
      { code: String.fromCharCode(read.code), body: read.body.toString() },
      { code: 'Z', body: 'T' },
      'after undivert the reader reads messages again',
    );
    t.equal(socket.listenerCount('data'), 1, 'one data listener all along');
    t.equal(gone, 0);
  },
);

t.test('the peer ending while diverted is told to the link', async (t) => {
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  let gone = 0;
  reader.divert(
    () => undefined,
    () => (gone += 1),
  );
  socket.end();
  await tick();
  await tick();
  t.ok(gone >= 1, 'gone() called');
  reader.undivert();
  await t.rejects(
    reader.message(),
    { message: 'connection closed by peer' },
    'and the reader knows',
  );
});

t.test('switchTo the socket it listens on adds no listener', async (t) => {
  const socket = new PassThrough();
  const reader = new PacketReader(socket);
  reader.switchTo(socket);
  reader.switchTo(socket);
  t.equal(socket.listenerCount('data'), 1);
  t.equal(socket.listenerCount('end'), 1);
  socket.write(message('Z', 'I'));
  const read = await reader.message();
  t.equal(String.fromCharCode(read.code), 'Z', 'and it still reads');
  const released = reader.release();
  t.equal(released.length, 0);
  t.equal(socket.listenerCount('data'), 0, 'release() stops listening');
  reader.switchTo(socket);
  t.equal(socket.listenerCount('data'), 1, 'switchTo() after release() listens again');
});
