// The pgvpd command line. createProgram builds the commander program with every command wired to
// the given output; runCli runs it and turns every way it can end into an exit code:
//   0   the command did what was asked (also --help and --version);
//   1   it could not (a message on stderr), or it ran and found a problem it reports (lint
//       errors, doctor FAIL lines), or commander rejected the arguments.
// Commands end unsuccessfully by throwing CliExit (a CommanderError); createProgram sets
// exitOverride, so commander's own failures are thrown in the same shape instead of exiting.
import { Command, CommanderError } from 'commander';
import * as demo from './commands/demo.js';
import * as doctor from './commands/doctor.js';
import * as invite from './commands/invite.js';
import * as lint from './commands/lint.js';
import * as org from './commands/org.js';
import * as protect from './commands/protect.js';
import * as serve from './commands/serve.js';
import * as server from './commands/server.js';
import * as setup from './commands/setup.js';
import * as status from './commands/status.js';
import * as token from './commands/token.js';
import * as user from './commands/user.js';
import { CliExit, formatFailure } from './cli-exit.js';
import { processIo, type CliIo } from './io.js';
import { packageVersion } from '../proxy/package-root.js';

export { CliExit } from './cli-exit.js';
export type { CliIo } from './io.js';

export function createProgram(io: CliIo = processIo): Command {
  const program = new Command('pgvpd')
    .description(
      'Virtual Private Database for PostgreSQL: the tenant is a property of the connection, enforced by row level security.',
    )
    .version(packageVersion)
    // Set before the commands are added: subcommands copy these settings when created.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => {
        io.out(text);
      },
      writeErr: (text) => {
        io.err(text);
      },
    });

  serve.register(program, io);
  demo.register(program, io);
  setup.register(program, io);
  protect.register(program, io);
  status.register(program, io);
  lint.register(program, io);
  doctor.register(program, io);
  org.register(program, io);
  user.register(program, io);
  server.register(program, io);
  token.register(program, io);
  invite.register(program, io);
  return program;
}

/** Runs the CLI on process-style arguments (['node', 'pgvpd', …]) and returns its exit code. */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  try {
    await createProgram(io).parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CliExit) {
      if (error.message !== '') io.err(`error: ${error.message}\n`);
      return error.exitCode;
    }
    // commander has already printed its message (or the help it was asked for).
    if (error instanceof CommanderError) return error.exitCode;
    io.err(formatFailure(error));
    return 1;
  }
}
