// Helpers for the client-compatibility tests (clients-*.test.ts): raw CancelRequests, the
// superuser's login, external tools (psql, pgbench) and small waits.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import type pg from 'pg';

/** The BackendKeyData a pg client received (pg keeps it, @types/pg does not declare it). */
export function backendKey(client: pg.Client): { processId: number; secretKey: number } {
  const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
  return { processId: processID, secretKey };
}

/**
 * Sends a CancelRequest (§55.2.9: int32 16, int32 80877102, int32 pid, int32 secret) on a
 * connection of its own; resolves when the server (here: the proxy) closes that connection,
 * which it does once it has handled the request.
 */
export function sendCancelRequest(port: number, processId: number, secretKey: number) {
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(80877102, 4);
  packet.writeInt32BE(processId, 8);
  packet.writeInt32BE(secretKey, 12);
  return new Promise<void>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.write(packet);
    });
    socket.once('error', reject);
    socket.once('close', () => {
      resolve();
    });
    socket.resume();
  });
}

/** The name and password in a superuser URL (adminUrl() or a test database's url). */
export function superuser(superuserUrl: string): { name: string; password: string } {
  const url = new URL(superuserUrl);
  return { name: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Polls `check` every 25 ms until it returns true; false when `timeoutMs` passed first. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a libpq tool with an environment free of the caller's PG* settings (so only the
 * arguments say where to connect), plus `env`. Killed after `timeoutMs`.
 */
export function runTool(
  command: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<ToolResult> {
  const clean: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('PG')) clean[name] = value;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...clean, PGCONNECT_TIMEOUT: '30', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      resolve({ code, signal, stdout, stderr });
    });
  });
}
