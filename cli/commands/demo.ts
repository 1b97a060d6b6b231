// pgvpd demo: the whole product on an embedded PostgreSQL, no installation needed. Prints the
// psql lines to try and runs until Ctrl-C, then removes everything it created.
import type { Command } from 'commander';
import { startDemo } from '../demo-stack.js';
import type { CliIo } from '../io.js';

export function register(program: Command, io: CliIo): void {
  program
    .command('demo')
    .summary('try pgvpd on an embedded PostgreSQL')
    .description(
      'start an embedded PostgreSQL, install pgvpd, create two tenants with a few rows, start the proxy and print psql lines to try; Ctrl-C stops and removes everything',
    )
    .option('-p, --port <port>', 'proxy port (0 picks a free one)', '6432')
    .action(async (options: { port: string }) => {
      const demo = await startDemo({
        port: Number(options.port),
        log: (line) => {
          io.err(`${line}\n`);
        },
      });
      io.out(`${demo.instructions().join('\n')}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          io.err('stopping: proxy, PostgreSQL, demo files…\n');
          void demo.stop().then(resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      io.err('demo stopped and removed\n');
    });
}
