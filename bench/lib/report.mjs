// What the benchmarks' reports are made of, shared by bench/proxy.mjs, bench/org.mjs and
// bench/app-pool.mjs: numbers as text, a target's verdict, plain-text tables, the median of a
// figure over rounds (failed ones left out) and the commit of the checkout that was measured.

import { spawnSync } from 'node:child_process';
import { median } from './cluster.mjs';

/** `n` with `digits` decimals and thousands separators; '–' for none (null, undefined, NaN). */
export const fmt = (n, digits = 0) =>
  n === null || n === undefined || Number.isNaN(n)
    ? '–'
    : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** A target's verdict: 'pass', 'FAIL', or 'not measured' when there is no figure (null). */
export const verdict = (ok) => (ok === null ? 'not measured' : ok ? 'pass' : 'FAIL');

/** The lines of a table: the head, a rule, the rows; columns padded to their widest cell. */
export function table(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    cells
      .map((c, i) => String(c).padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

/** The median of the figures there are (null, undefined and NaN left out); null when none. */
export const medianOf = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined && !Number.isNaN(x));
  return v.length ? median(v) : null;
};

/** The commit of a checkout, with "+dirty" when its tracked files differ from it. */
export function commitOf(tree) {
  const git = (...args) => spawnSync('git', ['-C', tree, ...args], { encoding: 'utf8' });
  const head = git('rev-parse', '--short', 'HEAD').stdout.trim() || '?';
  return git('status', '--porcelain', '--untracked-files=no').stdout.trim()
    ? `${head}+dirty`
    : head;
}
