// PostgreSQL's MD5 password answer, for an upstream that asks for md5 (pg_hba `md5`): the proxy
// answers it itself because the hash covers the username, which the proxy rewrote (app mode), or
// because the proxy logs in with a configured password (pooled logins).
import { createHash } from 'node:crypto';

/** PostgreSQL's MD5 response: "md5" + md5(md5(password + user) + salt). */
export function md5Response(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex');
  return (
    'md5' +
    createHash('md5')
      .update(Buffer.concat([Buffer.from(inner), salt]))
      .digest('hex')
  );
}
