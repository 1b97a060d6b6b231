// docs/architecture.md §7.5 in org mode: the proxy's logs never carry a password, a verifier or a
// token, while they do say who connected to which org and why a login was refused.
import t from 'tap';
import { createLogger } from '../../proxy/logger.js';
import { orgFixture } from './org-fixture.js';

t.test(
  'org-mode logs name org, user and refusals but never passwords, verifiers or tokens',
  async (t) => {
    const lines: string[] = [];
    const logger = createLogger('debug', {
      write: (line: string) => {
        lines.push(line);
      },
    });
    const f = await orgFixture(t, {}, { logger });
    const alice = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
    const token = (await alice.query<{ v: string }>(`select current_setting('pgvpd.context') as v`))
      .rows[0]!.v;
    await alice.end();
    await f.connect('acme-analytics', 'alice', 'wrong-password-123').catch(() => undefined);
    await f.connect('acme-analytics', 'mallory', 'mallory-secret-456').catch(() => undefined);
    const verifiers = (
      await f.db.query<{ v: string }>('select scram_verifier as v from pgvpd_private.org_users')
    ).rows.map((r) => r.v);
    await new Promise((resolve) => setTimeout(resolve, 200));

    const text = lines.join('');
    for (const secret of [
      'alice-at-acme',
      'wrong-password-123',
      'mallory-secret-456',
      token,
      f.connectAsPassword,
    ]) {
      t.notOk(text.includes(secret), `no ${secret.slice(0, 12)}… in the logs`);
    }
    for (const verifier of verifiers)
      t.notOk(text.includes(verifier.split('$')[2]!), 'no verifier keys');
    t.notOk(text.includes('SCRAM-SHA-256$'), 'no verifier at all');
    t.match(text, f.orgs.acme, 'the org is named');
    t.match(
      text,
      'password authentication failed for user \\"mallory\\": no such user',
      'why mallory was refused',
    );
    t.match(
      text,
      'password authentication failed for user \\"alice\\": wrong password',
      'why alice was refused',
    );
  },
);
