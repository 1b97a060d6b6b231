// connect_as passwords in pgpass format: fields, wildcards, escapes, first match wins.
import t from 'tap';
import { lookupPassword, parsePassfile } from '../../proxy/upstream/passfile.js';

const file = [
  '# comment',
  'db1.example:5432:acme:alice_ro:first',
  '*:*:acme:alice_ro:second',
  '127.0.0.1:6543:*:*:wild\\:card\\\\',
  '',
  'malformed:line',
].join('\n');

t.test('pgpass lines are parsed with escapes and malformed lines skipped', (t) => {
  t.same(parsePassfile(file), [
    { host: 'db1.example', port: '5432', database: 'acme', user: 'alice_ro', password: 'first' },
    { host: '*', port: '*', database: 'acme', user: 'alice_ro', password: 'second' },
    { host: '127.0.0.1', port: '6543', database: '*', user: '*', password: 'wild:card\\' },
  ]);
  t.end();
});

t.test('the first matching line gives the password; wildcards match anything', (t) => {
  const entries = parsePassfile(file);
  const cases = [
    {
      want: { host: 'db1.example', port: 5432, database: 'acme', user: 'alice_ro' },
      password: 'first',
    },
    { want: { host: 'other', port: 5432, database: 'acme', user: 'alice_ro' }, password: 'second' },
    { want: { host: '127.0.0.1', port: 6543, database: 'x', user: 'y' }, password: 'wild:card\\' },
    { want: { host: 'other', port: 1, database: 'x', user: 'y' }, password: undefined },
  ];
  for (const c of cases)
    t.equal(lookupPassword(entries, c.want), c.password, JSON.stringify(c.want));
  t.end();
});
