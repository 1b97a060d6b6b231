# The same verbs as the npm scripts. `sql` and `check-sql` live with the SQL core.
.PHONY: build typecheck lint format test bench

build:
	npm run build

typecheck:
	npm run typecheck

lint:
	npm run lint

format:
	npm run format

test:
	npm test

bench:
	npm run bench

# The SQL core: generate sql/setup.sql and the extension script from sql/migrations/committed,
# or check that they have not drifted.
.PHONY: sql check-sql
sql:
	node sql/build.mjs

check-sql:
	node sql/build.mjs --check

# docs/settings.md, generated from the settings table in proxy/config.ts (through the build);
# test/unit/settings-docs.test.ts fails when it has drifted.
.PHONY: settings-doc
settings-doc:
	npx tsc -p tsconfig.json
	node -e "import('./dist/proxy/settings-doc.js').then((m) => require('node:fs').writeFileSync('docs/settings.md', m.settingsDoc()))"
