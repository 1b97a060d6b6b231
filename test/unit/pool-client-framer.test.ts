// ClientFramer: what a pooled session forwards of a client's bytes, where it stops, and whether the
// client stopped between two messages. Fixtures are built from messages, then cut into chunks.
import t from 'tap';
import { ClientFramer, type FramerEnd } from '../../proxy/pool/client-framer.js';

function message(type: string, body: string | Buffer = ''): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const header = Buffer.alloc(5);
  header.write(type, 0, 'ascii');
  header.writeInt32BE(4 + payload.length, 1);
  return Buffer.concat([header, payload]);
}

const query = (sql: string): Buffer => message('Q', `${sql}\0`);
const terminate = message('X');
const sync = message('S');

/** Cuts a buffer at the given offsets. */
function cut(buffer: Buffer, ...at: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let from = 0;
  for (const to of [...at, buffer.length]) {
    chunks.push(buffer.subarray(from, to));
    from = to;
  }
  return chunks;
}

function run(chunks: Buffer[]): {
  forwarded: Buffer;
  end: FramerEnd | undefined;
  atBoundary: boolean;
} {
  const framer = new ClientFramer();
  const out: Buffer[] = [];
  let end: FramerEnd | undefined;
  for (const chunk of chunks) {
    const result = framer.push(chunk);
    out.push(result.forward);
    end = result.end;
  }
  return { forwarded: Buffer.concat(out), end, atBoundary: framer.atBoundary };
}

const selectOne = query('select 1');
const badLength = Buffer.from([0x51, 0, 0, 0, 3]);

t.test('forwards whole messages as they come and knows where the client stopped', (t) => {
  const cases: {
    name: string;
    chunks: Buffer[];
    forwarded: Buffer;
    end: FramerEnd | undefined;
    atBoundary: boolean;
  }[] = [
    {
      name: 'one whole message',
      chunks: [selectOne],
      forwarded: selectOne,
      end: undefined,
      atBoundary: true,
    },
    {
      name: 'two messages in one chunk',
      chunks: [Buffer.concat([selectOne, sync])],
      forwarded: Buffer.concat([selectOne, sync]),
      end: undefined,
      atBoundary: true,
    },
    {
      name: 'a message cut inside its header',
      chunks: cut(selectOne, 2),
      forwarded: selectOne,
      end: undefined,
      atBoundary: true,
    },
    {
      name: 'a message cut inside its body',
      chunks: cut(selectOne, 7, 9),
      forwarded: selectOne,
      end: undefined,
      atBoundary: true,
    },
    {
      name: 'a message whose body has not all arrived',
      chunks: [selectOne.subarray(0, 8)],
      forwarded: selectOne.subarray(0, 8),
      end: undefined,
      atBoundary: false,
    },
    {
      name: 'a header that has not all arrived (held back)',
      chunks: [Buffer.concat([sync, selectOne.subarray(0, 3)])],
      forwarded: sync,
      end: undefined,
      atBoundary: false,
    },
    {
      name: 'a Terminate alone',
      chunks: [terminate],
      forwarded: Buffer.alloc(0),
      end: 'terminate',
      atBoundary: true,
    },
    {
      name: 'a query and a Terminate in one chunk',
      chunks: [Buffer.concat([selectOne, terminate])],
      forwarded: selectOne,
      end: 'terminate',
      atBoundary: true,
    },
    {
      name: 'a Terminate cut inside its header',
      chunks: cut(Buffer.concat([selectOne, terminate]), selectOne.length + 2),
      forwarded: selectOne,
      end: 'terminate',
      atBoundary: true,
    },
    {
      name: 'bytes after a Terminate',
      chunks: [Buffer.concat([terminate, selectOne]), selectOne],
      forwarded: Buffer.alloc(0),
      end: 'terminate',
      atBoundary: true,
    },
    {
      name: 'a length below 4 (the bad header is not forwarded)',
      chunks: [Buffer.concat([sync, badLength])],
      forwarded: sync,
      end: 'violation',
      atBoundary: false,
    },
    {
      name: 'a Terminate-looking byte inside a body',
      chunks: [query('X')],
      forwarded: query('X'),
      end: undefined,
      atBoundary: true,
    },
  ];
  for (const c of cases) {
    const result = run(c.chunks);
    t.same(
      {
        forwarded: result.forwarded.toString('hex'),
        end: result.end,
        atBoundary: result.atBoundary,
      },
      { forwarded: c.forwarded.toString('hex'), end: c.end, atBoundary: c.atBoundary },
      c.name,
    );
  }
  t.end();
});

t.test('a stream cut at every offset forwards the same bytes up to the Terminate', (t) => {
  const body = Buffer.concat([query('select 1'), message('P', '\0select $1\0\0\0'), sync]);
  const stream = Buffer.concat([body, terminate]);
  let mismatches = 0;
  for (let first = 0; first <= stream.length; first++) {
    for (let second = first; second <= stream.length; second++) {
      const result = run(cut(stream, first, second));
      if (!result.forwarded.equals(body) || result.end !== 'terminate') mismatches += 1;
    }
  }
  t.equal(mismatches, 0, 'every split of the stream frames the same way');
  t.end();
});

t.test('whole messages between two boundaries go on as the very chunk, uncopied', (t) => {
  const framer = new ClientFramer();
  const chunk = Buffer.concat([selectOne, message('P', '\0select $1\0\0\0'), sync]);
  t.equal(framer.push(chunk).forward, chunk, 'the same Buffer object');
  t.equal(framer.push(selectOne).forward, selectOne);
  t.ok(framer.atBoundary);
  const withTerminate = Buffer.concat([selectOne, terminate]);
  const ended = framer.push(withTerminate);
  t.not(ended.forward, withTerminate, 'not with a Terminate in it');
  t.same(
    { forward: ended.forward.toString('hex'), end: ended.end },
    {
      forward: selectOne.toString('hex'),
      end: 'terminate',
    },
  );
  t.end();
});
