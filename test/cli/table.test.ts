// renderTable / formatCell: the text form of query rows that status and lint print.
import t from 'tap';
import { formatCell, renderTable } from '../../cli/table.js';

const cells: { what: string; value: unknown; text: string }[] = [
  { what: 'null', value: null, text: '' },
  { what: 'undefined', value: undefined, text: '' },
  { what: 'true', value: true, text: 'yes' },
  { what: 'false', value: false, text: 'no' },
  { what: 'a number', value: 42, text: '42' },
  { what: 'a bigint', value: 10n, text: '10' },
  { what: 'a string', value: 'plain', text: 'plain' },
  { what: 'a string with line breaks', value: 'two\n  lines', text: 'two lines' },
  { what: 'an object (jsonb)', value: { a: 1 }, text: '{"a":1}' },
];

for (const c of cells) {
  t.test(`formats ${c.what} as ${JSON.stringify(c.text)}`, (t) => {
    t.equal(formatCell(c.value), c.text);
    t.end();
  });
}

t.test('aligns every column to its widest cell or header, without trailing spaces', (t) => {
  const rows = [
    { name: 'public.docs', column: 'tenant_id', ok: true },
    { name: 'x', column: null, ok: false },
  ];
  t.equal(
    renderTable(rows),
    [
      'name         column     ok',
      '-----------  ---------  ---',
      'public.docs  tenant_id  yes',
      'x                       no',
      '',
    ].join('\n'),
  );
  t.end();
});

t.test('prints only the columns it is given, in their order', (t) => {
  const rows = [{ a: 1, b: 'two', c: 'hidden' }];
  t.equal(renderTable(rows, ['b', 'a']), ['b    a', '---  -', 'two  1', ''].join('\n'));
  t.end();
});

t.test('prints the header alone for no rows when columns are named', (t) => {
  t.equal(renderTable([] as { a: number }[], ['a']), 'a\n-\n');
  t.end();
});
