// The org, user, server, API token and invite operations of the CLI as a library, for any front
// end (the commands in cli/commands/, an HTTP API): plain inputs (a pg client on the catalog,
// plain objects), plain results, OperationError on failure, and no terminal I/O.
export * from './errors.js';
export { openClient, withClient } from './connection.js';
export type { ServerAccess } from './databases.js';
export * from './orgs.js';
export * from './users.js';
export * from './servers.js';
export * from './tokens.js';
export * from './invites.js';
