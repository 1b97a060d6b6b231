// Writes docs/settings.md from the settings table in proxy/config.ts (through the build in dist/):
//   npx tsc -p tsconfig.json && node scripts/settings-doc.mjs
import { writeFileSync } from 'node:fs';
import { settingsDoc } from '../dist/proxy/settings-doc.js';

writeFileSync(new URL('../docs/settings.md', import.meta.url), settingsDoc());
