// Passwords of connect_as roles, for org mode's upstream logins, from a file in PostgreSQL's
// pgpass format (hostname:port:database:username:password, `*` matches anything, `\:` and `\\`
// escaped, first matching line wins). The file is read when the proxy starts and on SIGHUP-free
// reloads by the caller; a file readable by others is refused, as libpq refuses it.
import { readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../config.js';

export interface PassEntry {
  host: string;
  port: string;
  database: string;
  user: string;
  password: string;
}

export function parsePassfile(text: string): PassEntry[] {
  const entries: PassEntry[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const fields: string[] = [];
    let current = '';
    for (let i = 0; i < line.length; i++) {
      const char = line.charAt(i);
      if (char === '\\' && i + 1 < line.length) {
        current += line.charAt(++i);
      } else if (char === ':' && fields.length < 4) {
        fields.push(current);
        current = '';
      } else {
        current += char;
      }
    }
    fields.push(current);
    const [host, port, database, user, password] = fields;
    if (
      host === undefined ||
      port === undefined ||
      database === undefined ||
      user === undefined ||
      password === undefined
    )
      continue;
    entries.push({ host, port, database, user, password });
  }
  return entries;
}

export function readPassfile(path: string): PassEntry[] {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (error) {
    throw new ConfigError(`connect_as_passfile ${path}: ${(error as Error).message}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new ConfigError(
      `connect_as_passfile ${path} is readable by group or others; chmod 0600 it`,
    );
  }
  return parsePassfile(readFileSync(path, 'utf8'));
}

export function lookupPassword(
  entries: PassEntry[],
  want: { host: string; port: number; database: string; user: string },
): string | undefined {
  const match = (field: string, value: string): boolean => field === '*' || field === value;
  return entries.find(
    (e) =>
      match(e.host, want.host) &&
      match(e.port, String(want.port)) &&
      match(e.database, want.database) &&
      match(e.user, want.user),
  )?.password;
}
