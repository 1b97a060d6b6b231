// docs/settings.md is generated from the settings table in proxy/config.ts; this fails when the
// file in the repository is not what the table generates, and says how to regenerate it.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { configKeys, envName, flagName } from '../../proxy/config.js';
import { regenerateCommand, settingsDoc } from '../../proxy/settings-doc.js';

const path = new URL('../../docs/settings.md', import.meta.url);

t.test('docs/settings.md is what the settings table generates', (t) => {
  const committed = readFileSync(path, 'utf8');
  t.equal(
    committed,
    settingsDoc(),
    `docs/settings.md differs from the settings table in proxy/config.ts: regenerate it with \`${regenerateCommand}\``,
  );
  t.end();
});

t.test('the generated table has one row per setting with its environment name and flag', (t) => {
  const rows = settingsDoc()
    .split('\n')
    .filter((line) => line.startsWith('| `'));
  t.equal(rows.length, configKeys.length, 'one row per setting');
  t.match(
    rows.find((row) => row.startsWith('| `listen_host`')),
    /^\| `listen_host` +\| app, org +\| `127\.0\.0\.1` +\| `PGVPD_HOST` +\| `--listen-host` +\| address to listen on +\|$/,
    "listen_host under the original pgvpd's environment name",
  );
  t.match(
    rows.find((row) => row.startsWith('| `connect_as_passwords`')),
    /^\| `connect_as_passwords` +\| app, org +\| — +\| `PGVPD_CONNECT_AS_PASSWORDS` +\| — \(environment only\) +\|/,
    'an environment-only setting has no flag',
  );
  for (const key of configKeys) {
    const row = rows.find((line) => line.startsWith(`| \`${key}\` `)) ?? '';
    t.ok(row.includes(`\`${envName(key)}\``), `${key}: its environment variable`);
    if (key !== 'connect_as_passwords')
      t.ok(row.includes(`\`${flagName(key)}\``), `${key}: its flag`);
  }
  t.end();
});
