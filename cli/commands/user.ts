// pgvpd user: an org's users. The work is done by cli/operations/users.ts (pgvpd.user_*
// functions). The proxy authenticates users itself with SCRAM-SHA-256, so the catalog keeps a
// verifier, never a password: this command reads the password (from the terminal without echo,
// or the first line of stdin), computes the verifier here, and hands only that to the operation.
// A password is never an argument.
import type { Command } from 'commander';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { operationAction } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { getOrg } from '../operations/orgs.js';
import { addUser, getUser, listUsers, removeUser, setUserVerifier } from '../operations/users.js';
import { readNewPassword } from '../read-password.js';
import { orgOption, usersTable } from './org.js';

interface UserOptions extends DbOptions {
  org: string;
}

interface PasswordOptions extends UserOptions {
  passwordStdin?: boolean;
}

interface AddOptions extends PasswordOptions {
  connectAs: string;
}

interface ListOptions extends UserOptions {
  json?: boolean;
}

const passwordStdinHelp =
  'read the password from the first line of stdin instead of the terminal (for scripts)';

export function register(program: Command, io: CliIo): void {
  const user = program
    .command('user')
    .summary("manage an org's users")
    .description(
      "manage an org's users: the proxy authenticates them with SCRAM-SHA-256 against a verifier computed here from the password (the password itself is never sent or stored), then connects them upstream as their connect_as role",
    );

  user
    .command('add')
    .summary('add a user to an org')
    .description(
      'add a user to an org; the password is asked twice on the terminal without echo, or read from stdin with --password-stdin. The connect_as role must exist, log in, and be neither superuser nor BYPASSRLS',
    )
    .argument('<username>', 'the name the user logs in with, unique within the org')
    .addOption(orgOption())
    .requiredOption('--connect-as <role>', 'the role the proxy logs in as upstream for this user')
    .option('--password-stdin', passwordStdinHelp)
    .addOption(dbOption())
    .action(
      operationAction(io, async (username: string, options: AddOptions) => {
        const url = connectionString(options);
        const added = await withClient(url, async (client) => {
          // Before asking for a password nobody could use.
          const found = await getOrg(client, options.org);
          const password = await readNewPassword(io, {
            fromStdin: options.passwordStdin === true,
            who: `${username} in org ${found.database_name}`,
          });
          return addUser(client, {
            org: found.id,
            username,
            verifier: makeVerifier(password),
            connectAs: options.connectAs,
          });
        });
        io.out(
          `added user ${username} to org ${added.org.database_name}, connecting as ${options.connectAs}\n`,
        );
      }),
    );

  user
    .command('passwd')
    .summary("change a user's password")
    .description(
      "change a user's password; asked twice on the terminal without echo, or read from stdin with --password-stdin",
    )
    .argument('<username>', 'the user')
    .addOption(orgOption())
    .option('--password-stdin', passwordStdinHelp)
    .addOption(dbOption())
    .action(
      operationAction(io, async (username: string, options: PasswordOptions) => {
        const url = connectionString(options);
        const changed = await withClient(url, async (client) => {
          // Before asking for a password nobody could use.
          const { org: found } = await getUser(client, options.org, username);
          const password = await readNewPassword(io, {
            fromStdin: options.passwordStdin === true,
            who: `${username} in org ${found.database_name}`,
          });
          return setUserVerifier(client, {
            org: found.id,
            username,
            verifier: makeVerifier(password),
          });
        });
        io.out(`changed the password of user ${username} in org ${changed.org.database_name}\n`);
      }),
    );

  user
    .command('list')
    .summary("list an org's users")
    .description("list an org's users and their connect_as roles")
    .addOption(orgOption())
    .option('--json', 'print a JSON array of pgvpd.org_users() rows instead of a table')
    .addOption(dbOption())
    .action(
      operationAction(io, async (options: ListOptions) => {
        const url = connectionString(options);
        const { org, users } = await withClient(url, (client) => listUsers(client, options.org));
        if (options.json === true) {
          io.out(`${JSON.stringify(users, null, 2)}\n`);
          return;
        }
        io.out(users.length === 0 ? `no users in org ${org.database_name}\n` : usersTable(users));
      }),
    );

  user
    .command('remove')
    .summary('remove a user from an org')
    .description(
      'remove a user from an org. Its connect_as role is left alone, except that pgvpd revokes what it granted the role once no user connects as it',
    )
    .argument('<username>', 'the user')
    .addOption(orgOption())
    .addOption(dbOption())
    .action(
      operationAction(io, async (username: string, options: UserOptions) => {
        const url = connectionString(options);
        const removed = await withClient(url, (client) =>
          removeUser(client, { org: options.org, username }),
        );
        io.out(`removed user ${username} from org ${removed.org.database_name}\n`);
      }),
    );
}
