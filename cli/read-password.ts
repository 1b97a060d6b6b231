// What a person types or a script pipes in: a password read without echo from a terminal (twice,
// so that a typo does not lock the user out), or the first line of stdin (--password-stdin), and
// the line that confirms a destructive command. A password is never a command-line argument:
// arguments show in `ps`, in shell history and in CI logs.
//
// Commands read from `stdinOf(io)`: process.stdin, or the stream a test puts on its CliIo, so that
// tests drive both paths in-process (a PassThrough with isTTY and setRawMode plays the terminal).
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { CliExit } from './cli-exit.js';
import type { CliIo } from './io.js';

/** stdin as the CLI uses it; isTTY and setRawMode as on a tty.ReadStream when it is a terminal. */
export type InputStream = Readable & {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
};

/** A CliIo may say where input comes from; without it commands read process.stdin. */
export interface InputIo {
  stdin?: InputStream;
}

export function stdinOf(io: CliIo): InputStream {
  return (io as CliIo & InputIo).stdin ?? process.stdin;
}

const ctrlC = '\u0003';
const ctrlD = '\u0004';
const backspaces = new Set(['\u007f', '\b']);

/**
 * Reads a stream character by character as it arrives, keeping what it has not handed out yet:
 * two answers typed ahead (or piped in one chunk) are two answers. close() stops reading, so that
 * process.stdin no longer keeps the process alive.
 */
export class InputReader {
  private buffered = '';
  private ended = false;
  private failure: Error | undefined;
  private attached = false;
  private wake: (() => void) | undefined;
  private readonly decoder = new StringDecoder('utf8');

  constructor(readonly input: InputStream) {}

  private readonly onData = (chunk: Buffer | string): void => {
    this.buffered += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    this.notify();
  };

  private readonly onEnd = (): void => {
    this.buffered += this.decoder.end();
    this.ended = true;
    this.notify();
  };

  private readonly onError = (error: Error): void => {
    this.failure = error;
    this.ended = true;
    this.notify();
  };

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private attach(): void {
    if (this.attached) return;
    this.attached = true;
    this.input.on('data', this.onData);
    this.input.on('end', this.onEnd);
    this.input.on('error', this.onError);
    this.input.resume();
  }

  close(): void {
    if (!this.attached) return;
    this.attached = false;
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.off('error', this.onError);
    this.input.pause();
  }

  /** Waits until something is buffered; false at the end of input. */
  private async fill(): Promise<boolean> {
    this.attach();
    while (this.buffered === '') {
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return false;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    return true;
  }

  /** The next character (a whole code point), or undefined at the end of input. */
  async nextChar(): Promise<string | undefined> {
    if (!(await this.fill())) return undefined;
    const char = String.fromCodePoint(this.buffered.codePointAt(0) ?? 0);
    this.buffered = this.buffered.slice(char.length);
    return char;
  }

  /** The next line without its line end (\n or \r\n), or undefined when input ended first. */
  async readLine(): Promise<string | undefined> {
    let line = '';
    for (;;) {
      const char = await this.nextChar();
      if (char === undefined) return line === '' ? undefined : line;
      if (char === '\n') return line.endsWith('\r') ? line.slice(0, -1) : line;
      line += char;
    }
  }

  /**
   * A line typed on a terminal without echo: the terminal is in raw mode meanwhile, so this does
   * the line editing itself (backspace), ends on Enter, and gives up on Ctrl-C, or Ctrl-D on an
   * empty line. Other control characters are ignored.
   */
  async readSecret(prompt: string, io: CliIo): Promise<string> {
    io.err(prompt);
    this.input.setRawMode?.(true);
    try {
      let secret = '';
      for (;;) {
        const char = await this.nextChar();
        if (char === undefined || char === ctrlC || (char === ctrlD && secret === '')) {
          throw new CliExit(1, 'cancelled: nothing was changed');
        }
        if (char === '\r' || char === '\n') {
          // Enter may arrive as \r\n (a paste, a terminal in an odd mode): one line end.
          if (char === '\r' && this.buffered.startsWith('\n'))
            this.buffered = this.buffered.slice(1);
          return secret;
        }
        if (backspaces.has(char)) secret = Array.from(secret).slice(0, -1).join('');
        else if (char >= ' ') secret += char;
      }
    } finally {
      this.input.setRawMode?.(false);
      io.err('\n');
    }
  }
}

/**
 * A new password for `who`: the first line of stdin with --password-stdin (its line end
 * removed, nothing else), otherwise typed twice on the terminal without echo. Refuses an empty
 * password, two entries that differ, and a stdin that is not a terminal without --password-stdin.
 */
export async function readNewPassword(
  io: CliIo,
  options: { fromStdin: boolean; who: string },
): Promise<string> {
  const input = stdinOf(io);
  if (!options.fromStdin && input.isTTY !== true) {
    throw new CliExit(
      1,
      'stdin is not a terminal, so the password cannot be typed: pass --password-stdin and write the password as the first line of stdin',
    );
  }
  const reader = new InputReader(input);
  try {
    if (options.fromStdin) {
      const line = await reader.readLine();
      if (line === undefined || line === '') {
        throw new CliExit(1, 'no password: --password-stdin reads it from the first line of stdin');
      }
      return line;
    }
    const first = await reader.readSecret(`Password for ${options.who}: `, io);
    if (first === '') throw new CliExit(1, 'empty password: nothing was changed');
    const second = await reader.readSecret('Password again: ', io);
    if (second !== first) throw new CliExit(1, 'the two passwords differ: nothing was changed');
    return first;
  } finally {
    reader.close();
  }
}

/**
 * One line typed on the terminal (echoed as usual), after `prompt`: '' when input ends first
 * (Ctrl-D), undefined when stdin is not a terminal.
 */
export async function readTerminalLine(io: CliIo, prompt: string): Promise<string | undefined> {
  const input = stdinOf(io);
  if (input.isTTY !== true) return undefined;
  const reader = new InputReader(input);
  try {
    io.err(prompt);
    return (await reader.readLine()) ?? '';
  } finally {
    reader.close();
  }
}
