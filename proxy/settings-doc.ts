// docs/settings.md, derived from the settings table in config.ts: one row per setting with the
// modes it applies to, its default, environment variable, flag and meaning. Written by
// `make settings-doc`; test/unit/settings-docs.test.ts fails when the
// file in the repository differs from what this returns.
import {
  configKeys,
  contextValueName,
  envName,
  flagName,
  settings,
  type ConfigKey,
  type Setting,
} from './config.js';

export const regenerateCommand = 'make settings-doc';

const table: Record<ConfigKey, Setting> = settings;

const code = (text: string): string => `\`${text}\``;

function defaultText(setting: Setting): string {
  switch (setting.kind) {
    case 'optional':
      return setting.default === undefined ? '—' : code(setting.default);
    case 'list':
      return setting.default.length === 0 ? '(none)' : code(setting.default.join(','));
    case 'seconds':
      return `${String(setting.default)} s`;
    case 'optional_port':
      return setting.default === undefined ? '—' : String(setting.default);
    case 'port':
    case 'count':
    case 'count_or_zero':
      return String(setting.default);
    default:
      return code(String(setting.default));
  }
}

/** A Markdown table laid out as prettier lays it out, so that `prettier --check` passes. */
function markdownTable(header: string[], rows: string[][]): string {
  const cells = [header, ...rows].map((row) => row.map((cell) => cell.replaceAll('|', '\\|')));
  const widths = header.map((_, column) =>
    Math.max(3, ...cells.map((row) => (row[column] ?? '').length)),
  );
  const line = (row: string[]): string =>
    `| ${row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join(' | ')} |`;
  const [head = [], ...body] = cells;
  return [line(head), line(widths.map((width) => '-'.repeat(width))), ...body.map(line)].join('\n');
}

export function settingsDoc(): string {
  const rows = configKeys.map((key) => {
    const setting = table[key];
    return [
      code(key),
      setting.modes.join(', '),
      defaultText(setting),
      code(envName(key)),
      setting.envOnly === true ? '— (environment only)' : code(flagName(key)),
      setting.help,
    ];
  });
  return `# Settings of \`pgvpd serve\`

<!-- Generated from the settings table in proxy/config.ts by \`${regenerateCommand}\`; do not edit by hand. -->

Defaults → config file (\`--config pgvpd.conf\`, \`key = value\` lines, \`#\` comments) → environment
→ flags, each layer overriding the one before. Names follow the original pgvpd where they exist. A
bad value stops the proxy with the key and where it came from, e.g.
\`environment PGVPD_UPSTREAM_PORT: upstream_port must be a port number, got "seventy"\`.

Each setting applies to app mode ([app-mode.md](app-mode.md)), org mode
([org-mode.md](org-mode.md)) or both. A setting given for a mode it does not apply to stops the
proxy too, whichever layer gave it, e.g.
\`superuser_bypass applies to app mode only; this proxy runs in org mode (set in environment PGVPD_SUPERUSER_BYPASS)\`.
A setting for the environment only has no flag and is refused in a config file.

${markdownTable(['setting', 'modes', 'default', 'environment', 'flag', 'meaning'], rows)}

The names in \`context_variables\` after the first (the tenant's) become the names of context
values, so they must be names the database accepts: they match \`${contextValueName.source}\` and
are not \`tenant\`. Any other name stops the proxy at start, naming it.
`;
}
