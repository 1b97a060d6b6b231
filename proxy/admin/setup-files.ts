// The /setup page's three files (proxy/admin/setup/index.html, setup.js, setup.css below the
// package root), read once at start. A file that is absent is served as 404, not as an error.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../package-root.js';

export interface SetupFile {
  contentType: string;
  body: Buffer;
}

export interface SetupFiles {
  html: SetupFile | undefined;
  js: SetupFile | undefined;
  css: SetupFile | undefined;
}

function read(name: string, contentType: string, dir: string): SetupFile | undefined {
  try {
    return { contentType, body: readFileSync(join(dir, name)) };
  } catch {
    return undefined;
  }
}

export function readSetupFiles(dir = join(packageRoot, 'proxy', 'admin', 'setup')): SetupFiles {
  return {
    html: read('index.html', 'text/html; charset=utf-8', dir),
    js: read('setup.js', 'text/javascript; charset=utf-8', dir),
    css: read('setup.css', 'text/css; charset=utf-8', dir),
  };
}
