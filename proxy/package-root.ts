// Where pgvpd's own files are (the SQL, the /setup page) and its version, for the proxy and the
// CLI alike. Both run from source under the tests and from dist/ once built, at different depths
// below the package root, so the root is found by walking up to pgvpd's package.json rather than
// by a fixed relative path.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Manifest {
  name?: unknown;
  version?: unknown;
}

function readManifest(dir: string): Manifest | undefined {
  const path = join(dir, 'package.json');
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, 'utf8')) as Manifest;
}

function findRoot(start: string): { root: string; version: string } {
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = readManifest(dir);
    if (manifest?.name === 'pgvpd' && typeof manifest.version === 'string') {
      return { root: dir, version: manifest.version };
    }
    if (dirname(dir) === dir) throw new Error(`pgvpd: no package.json of pgvpd above ${start}`);
  }
}

const found = findRoot(dirname(fileURLToPath(import.meta.url)));

export const packageRoot = found.root;
export const packageVersion = found.version;
/** graphile-migrate's migrationsFolder: it reads committed/ below it. */
export const migrationsFolder = join(packageRoot, 'sql', 'migrations');
