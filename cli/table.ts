// Query rows as an aligned text table, the way psql's aligned format reads but without borders,
// so that a terminal user can scan a column and a diff of two runs stays readable.

export function formatCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'string') return value.replace(/\s*\n\s*/g, ' ');
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  return JSON.stringify(value);
}

const gap = '  ';

/**
 * A header line, a dashed line, then one line per row; columns are those named, in order (by
 * default the first row's). Lines carry no trailing spaces.
 */
export function renderTable<T extends object>(
  rows: readonly T[],
  columns?: readonly (keyof T & string)[],
): string {
  const names = columns ?? (Object.keys(rows[0] ?? {}) as (keyof T & string)[]);
  const cells = rows.map((row) => names.map((name) => formatCell(row[name])));
  const widths = names.map((name, i) =>
    Math.max(name.length, ...cells.map((line) => (line[i] ?? '').length)),
  );
  const line = (values: readonly string[]): string =>
    values
      .map((value, i) => value.padEnd(widths[i] ?? 0))
      .join(gap)
      .trimEnd();
  return (
    [line(names), line(widths.map((width) => '-'.repeat(width))), ...cells.map(line)].join('\n') +
    '\n'
  );
}
