#!/usr/bin/env node
// The `pgvpd` executable (package.json "bin"). The exit code is set rather than process.exit()
// called, so that output still being written to a pipe is not cut off.
import { runCli } from './program.js';

process.exitCode = await runCli(process.argv);
