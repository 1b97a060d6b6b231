// cli/read-password.ts without a database: lines and secrets from a stream that plays stdin, a
// pipe or a terminal (isTTY and setRawMode), with typed-ahead input, split characters and the
// keys a person presses at a password prompt.
import { PassThrough } from 'node:stream';
import t from 'tap';
import { CliExit } from '../../cli/cli-exit.js';
import type { CliIo } from '../../cli/io.js';
import {
  InputReader,
  readNewPassword,
  readTerminalLine,
  type InputStream,
} from '../../cli/read-password.js';

interface Fake {
  stream: InputStream;
  modes: boolean[];
}

/** A stream holding `chunks`, ended; a terminal when tty, recording its raw-mode switches. */
function input(chunks: (string | Buffer)[], tty: boolean): Fake {
  const modes: boolean[] = [];
  const stream = new PassThrough() as PassThrough & InputStream;
  if (tty) {
    stream.isTTY = true;
    stream.setRawMode = (mode: boolean) => {
      modes.push(mode);
    };
  }
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  return { stream, modes };
}

function io(stdin?: InputStream): CliIo & { stdin?: InputStream; written: string } {
  const result = {
    written: '',
    out: () => undefined,
    err: (text: string) => {
      result.written += text;
    },
    ...(stdin === undefined ? {} : { stdin }),
  };
  return result;
}

async function failure(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return error instanceof CliExit
      ? `CliExit ${String(error.exitCode)}: ${error.message}`
      : String(error);
  }
}

t.test('readLine returns line after line, without \\n or \\r\\n, then undefined', async (t) => {
  const reader = new InputReader(input(['one\r\ntw', 'o\nthree'], false).stream);
  t.equal(await reader.readLine(), 'one');
  t.equal(await reader.readLine(), 'two');
  t.equal(await reader.readLine(), 'three');
  t.equal(await reader.readLine(), undefined);
  reader.close();
});

t.test('a UTF-8 character split across two chunks is read whole', async (t) => {
  const bytes = Buffer.from('pé€😀\n');
  const reader = new InputReader(
    input([bytes.subarray(0, 2), bytes.subarray(2, 7), bytes.subarray(7)], false).stream,
  );
  t.equal(await reader.readLine(), 'pé€😀');
  reader.close();
});

t.test('readSecret switches raw mode on and off and echoes nothing but the line end', async (t) => {
  const fake = input(['s3cret\r'], true);
  const sink = io();
  const reader = new InputReader(fake.stream);
  t.equal(await reader.readSecret('Password: ', sink), 's3cret');
  reader.close();
  t.same(fake.modes, [true, false]);
  t.equal(sink.written, 'Password: \n');
});

t.test(
  'readSecret applies backspace (also to a whole emoji) and ignores control characters',
  async (t) => {
    const reader = new InputReader(input(['ab\u007fc😀\u007f\bd\u001b\te\r'], true).stream);
    t.equal(await reader.readSecret('', io()), 'ade');
    reader.close();
  },
);

t.test('readSecret reads two answers typed ahead, \\r\\n counting as one line end', async (t) => {
  const reader = new InputReader(input(['first\r\nsecond\n'], true).stream);
  t.equal(await reader.readSecret('', io()), 'first');
  t.equal(await reader.readSecret('', io()), 'second');
  reader.close();
});

t.test(
  'readSecret gives up on Ctrl-C, on Ctrl-D at the start, and at the end of input',
  async (t) => {
    for (const typed of ['abc\u0003', '\u0004', 'abc']) {
      const fake = input([typed], true);
      const reader = new InputReader(fake.stream);
      t.equal(
        await failure(reader.readSecret('', io())),
        'CliExit 1: cancelled: nothing was changed',
        JSON.stringify(typed),
      );
      reader.close();
      t.same(fake.modes, [true, false], 'raw mode is switched off again');
    }
  },
);

t.test('readNewPassword --password-stdin takes the first line only, as it is', async (t) => {
  const sink = io(input([' pass word \r\nsecond line\n'], false).stream);
  t.equal(await readNewPassword(sink, { fromStdin: true, who: 'alice' }), ' pass word ');
  t.equal(sink.written, '', 'no prompt');
});

t.test(
  'readNewPassword --password-stdin also reads from a terminal, and a last line without \\n',
  async (t) => {
    t.equal(
      await readNewPassword(io(input(['typed'], true).stream), { fromStdin: true, who: 'alice' }),
      'typed',
    );
  },
);

t.test(
  'readNewPassword --password-stdin refuses an empty first line and an empty stdin',
  async (t) => {
    for (const chunks of [['\nsecond\n'], []]) {
      t.equal(
        await failure(
          readNewPassword(io(input(chunks, false).stream), { fromStdin: true, who: 'a' }),
        ),
        'CliExit 1: no password: --password-stdin reads it from the first line of stdin',
      );
    }
  },
);

t.test('readNewPassword on a terminal asks twice and returns the password', async (t) => {
  const fake = input(['pw one\rpw one\r'], true);
  const sink = io(fake.stream);
  t.equal(await readNewPassword(sink, { fromStdin: false, who: 'alice in org acme' }), 'pw one');
  t.equal(sink.written, 'Password for alice in org acme: \nPassword again: \n');
  t.same(fake.modes, [true, false, true, false]);
  t.equal(fake.stream.readableFlowing, false, 'stdin is paused afterwards');
});

t.test(
  'readNewPassword on a terminal refuses two different entries and an empty one',
  async (t) => {
    t.equal(
      await failure(
        readNewPassword(io(input(['one\rtwo\r'], true).stream), { fromStdin: false, who: 'a' }),
      ),
      'CliExit 1: the two passwords differ: nothing was changed',
    );
    t.equal(
      await failure(
        readNewPassword(io(input(['\r'], true).stream), { fromStdin: false, who: 'a' }),
      ),
      'CliExit 1: empty password: nothing was changed',
    );
  },
);

t.test(
  'readNewPassword without --password-stdin refuses a stdin that is not a terminal',
  async (t) => {
    const sink = io(input(['piped\n'], false).stream);
    t.equal(
      await failure(readNewPassword(sink, { fromStdin: false, who: 'a' })),
      'CliExit 1: stdin is not a terminal, so the password cannot be typed: pass --password-stdin and write the password as the first line of stdin',
    );
    t.equal(sink.written, '');
  },
);

t.test(
  'readTerminalLine prompts and reads a line on a terminal, and nothing elsewhere',
  async (t) => {
    const tty = io(input(['acme\n'], true).stream);
    t.equal(await readTerminalLine(tty, 'name? '), 'acme');
    t.equal(tty.written, 'name? ');
    t.equal(await readTerminalLine(io(input([], true).stream), 'name? '), '', 'Ctrl-D: empty');
    const pipe = io(input(['acme\n'], false).stream);
    t.equal(await readTerminalLine(pipe, 'name? '), undefined);
    t.equal(pipe.written, '');
  },
);
