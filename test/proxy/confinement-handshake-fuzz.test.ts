// Issue 11, finding 4, with the handshake's back-pressure in place: 10,000 malformed handshakes
// (seeded, so a failure can be replayed) against both modes, 16 clients at a time. Every client
// must end with a FATAL ErrorResponse or a close, none may hang, and a good client is served
// after. The inputs mix garbage, bad lengths, valid startup packets followed by garbage or by
// password messages with bad lengths, encryption requests, and streams larger than the reader's
// cap. Each client half-closes after its bytes, so a proxy waiting for more sees the end.
import { connect } from 'node:net';
import t, { type Test } from 'tap';
import { maxReadAhead } from '../../proxy/protocol/codes.js';
import {
  cstring,
  gssencRequest,
  int32,
  sslRequest,
  startupMessage,
  typedMessage,
} from '../support/wire.js';
import { proxyFixture, visible } from './fixture.js';
import { orgFixture } from './org-fixture.js';
import { seen } from './org-support.js';

/** Clients in flight at once (below max_unauthenticated_per_address). */
const concurrency = 16;
/** A client still open after this long hangs (handshake_timeout is 10 s in the fixtures). */
const hangMs = 20_000;

/** mulberry32: a small seeded PRNG, so that every run sends the same inputs. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Input {
  kind: string;
  bytes: Buffer;
}

/** The i-th input for a mode whose valid startup packet is `startup`. */
function input(seed: number, i: number, startup: Buffer): Input {
  const random = prng(seed * 100_003 + i);
  const int = (below: number): number => Math.floor(random() * below);
  const bytes = (length: number): Buffer => {
    const out = Buffer.alloc(length);
    for (let at = 0; at < length; at++) out[at] = int(256);
    return out;
  };
  const anyLength = (): number =>
    [-1, 0, 3, 4, 7, 8, 9, 10_000, 10_001, 65_536, 0x7fffffff, -0x80000000, int(20_000)][int(13)] ??
    0;
  switch (int(8)) {
    case 0:
      return { kind: 'garbage', bytes: bytes(1 + int(300)) };
    case 1:
      return {
        kind: 'a length, then garbage',
        bytes: Buffer.concat([int32(anyLength()), bytes(int(400))]),
      };
    case 2:
      return {
        kind: 'startup, then garbage',
        bytes: Buffer.concat([startup, bytes(int(400))]),
      };
    case 3:
      return {
        kind: 'startup, then a password message of any length',
        bytes: Buffer.concat([startup, Buffer.from('p'), int32(anyLength()), bytes(int(200))]),
      };
    case 4: {
      const request = int(2) === 0 ? sslRequest() : gssencRequest();
      return {
        kind: 'encryption request, then garbage',
        bytes: Buffer.concat([request, bytes(int(200))]),
      };
    }
    case 5: {
      // A SASLInitialResponse with garbage inside, then garbage.
      const data = bytes(int(100));
      const body = Buffer.concat([
        cstring('SCRAM-SHA-256'),
        int32(int(2) === 0 ? data.length : anyLength()),
        data,
      ]);
      return {
        kind: 'startup, then a garbled SASLInitialResponse',
        bytes: Buffer.concat([startup, typedMessage('p', body), bytes(int(100))]),
      };
    }
    case 6: {
      // A valid startup packet with a few bytes flipped.
      const mutated = Buffer.from(startup);
      for (let n = 1 + int(4); n > 0; n--) mutated[int(mutated.length)] = int(256);
      return { kind: 'startup with flipped bytes', bytes: mutated };
    }
    default:
      // More than the reader holds ahead, behind a valid startup packet or alone.
      return {
        kind: 'a stream over the cap',
        bytes: Buffer.concat([
          int(2) === 0 ? startup : Buffer.alloc(0),
          bytes(maxReadAhead + int(maxReadAhead)),
        ]),
      };
  }
}

type Outcome =
  { ended: 'error'; code: string; severity: string } | { ended: 'close' } | { ended: 'hang' };

/** Sends `bytes`, half-closes, and reads until the proxy closes. */
function run(port: number, bytes: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', noDelay: true });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ended: 'hang' });
    }, hangMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // The proxy may close with bytes of ours unread: a reset is a close too.
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(outcomeOf(Buffer.concat(chunks)));
    });
    socket.end(bytes);
  });
}

/** The last ErrorResponse among the frames received, else a close. */
function outcomeOf(received: Buffer): Outcome {
  let at = 0;
  // The one-byte answer to an encryption request ('N': no TLS in these fixtures).
  if (received[0] === 0x4e && (received.length === 1 || received[1] !== 0)) at = 1;
  let last: Outcome = { ended: 'close' };
  while (at + 5 <= received.length) {
    const code = received[at];
    const length = received.readInt32BE(at + 1);
    if (length < 4 || at + 1 + length > received.length) break;
    if (code === 0x45) {
      const fields = new Map<string, string>();
      let field = at + 5;
      const end = at + 1 + length;
      while (field < end && received[field] !== 0) {
        const zero = received.indexOf(0, field + 1);
        if (zero < 0 || zero >= end) break;
        fields.set(
          String.fromCharCode(received[field] ?? 0),
          received.toString('utf8', field + 1, zero),
        );
        field = zero + 1;
      }
      last = { ended: 'error', code: fields.get('C') ?? '', severity: fields.get('S') ?? '' };
    }
    at += 1 + length;
  }
  return last;
}

/** Sends `count` inputs, `concurrency` clients at a time, and checks how each one ended. */
async function fuzz(
  t: Test,
  port: number,
  seed: number,
  count: number,
  startup: Buffer,
): Promise<void> {
  const tally = new Map<string, number>();
  const hangs: string[] = [];
  const badErrors: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const { kind, bytes } = input(seed, i, startup);
      const outcome = await run(port, bytes);
      const key = `${kind} → ${outcome.ended === 'error' ? `FATAL ${outcome.code}` : outcome.ended}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
      if (outcome.ended === 'hang') hangs.push(`#${String(i)} ${kind}`);
      if (
        outcome.ended === 'error' &&
        (outcome.severity !== 'FATAL' || !/^[0-9A-Z]{5}$/.test(outcome.code))
      )
        badErrors.push(`#${String(i)} ${kind}: ${outcome.severity} ${outcome.code}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  for (const [key, n] of [...tally].sort(([a], [b]) => a.localeCompare(b)))
    t.comment(`${key}: ${String(n)}`);
  const total = (match: string): number =>
    [...tally].filter(([key]) => key.includes(match)).reduce((sum, [, n]) => sum + n, 0);
  t.equal(total(' → '), count, `${String(count)} inputs sent`);
  t.same(hangs, [], 'every client ended with an ErrorResponse or a close');
  t.same(badErrors, [], 'every ErrorResponse is FATAL with an SQLSTATE');
  t.ok(total('FATAL 08P01') > count / 4, 'most are protocol violations (08P01)');
}

// 10,000 inputs in all; fewer in app mode, where an input with a valid startup packet costs an
// upstream connection.
t.test(
  'finding 4: 3,000 malformed handshakes in app mode each end in a FATAL or a close',
  async (t) => {
    const f = await proxyFixture(t);
    const startup = startupMessage({ user: f.userFor('acme'), database: f.db.name });
    await fuzz(t, f.proxy.port, 4, 3000, startup);
    const acme = await f.connect(f.userFor('acme'));
    t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'a good client is served after');
  },
);

t.test(
  'finding 4: 7,000 malformed handshakes in org mode each end in a FATAL or a close',
  async (t) => {
    const f = await orgFixture(t);
    const startup = startupMessage({ user: 'alice', database: 'acme-analytics' });
    await fuzz(t, f.proxy.port, 44, 7000, startup);
    const alice = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
    t.same(
      await seen(alice),
      { tenant: f.orgs.acme, rows: ['a1', 'a2'] },
      'a good client is served after',
    );
  },
);
