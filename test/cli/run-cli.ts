// Runs the pgvpd CLI inside the test process, exactly as a shell would (same argument parsing,
// same output), and keeps its exit code and what it wrote to stdout and stderr.
import { createServer } from 'node:net';
import { runCli } from '../../cli/program.js';

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

export async function pgvpd(...args: string[]): Promise<CliResult> {
  const result: CliResult = { code: -1, out: '', err: '' };
  result.code = await runCli(['node', 'pgvpd', ...args], {
    out: (text) => {
      result.out += text;
    },
    err: (text) => {
      result.err += text;
    },
  });
  return result;
}

/** Runs fn with DATABASE_URL unset (or set to value), then puts it back. */
export async function withDatabaseUrl<T>(
  value: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  const saved = process.env.DATABASE_URL;
  const set = (to: string | undefined): void => {
    if (to === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = to;
  };
  set(value);
  try {
    return await fn();
  } finally {
    set(saved);
  }
}

/** A port on 127.0.0.1 that nothing listens on: bound by the OS, then released. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}
