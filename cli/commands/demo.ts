// pgvpd demo: the whole product on an embedded PostgreSQL, no installation needed: an app-mode
// proxy, and an org-mode proxy with the HTTP control plane. Prints the psql lines, the invite
// link and the curl lines to try and runs until Ctrl-C, then removes everything it created.
import type { Command } from 'commander';
import { startDemo } from '../demo-stack.js';
import type { CliIo } from '../io.js';

export function register(program: Command, io: CliIo): void {
  program
    .command('demo')
    .summary('try pgvpd on an embedded PostgreSQL')
    .description(
      'start an embedded PostgreSQL, install pgvpd, create two tenants with a few rows and start the proxy in app mode; create two orgs, a user, API tokens and an invite and start a second proxy in org mode with the HTTP control plane; print psql lines, an invite link and curl lines to try; Ctrl-C stops and removes everything',
    )
    .option('-p, --port <port>', 'app-mode proxy port (0 picks a free one)', '6432')
    .option('--org-port <port>', 'org-mode proxy port (0 picks a free one)', '6433')
    .option(
      '--admin-port <port>',
      'port of the HTTP control plane on 127.0.0.1 (0 picks a free one)',
      '6434',
    )
    .action(async (options: { port: string; orgPort: string; adminPort: string }) => {
      const demo = await startDemo({
        port: Number(options.port),
        orgPort: Number(options.orgPort),
        adminPort: Number(options.adminPort),
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
