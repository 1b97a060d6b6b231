// Structured logs (pino). Sessions log connect, route, auth result, duration and errors; the
// redact list is a second line of defence: no code path logs a password or a token.
import pino, { type DestinationStream, type Logger } from 'pino';
import type { ProxyConfig } from './config.js';

export type { Logger } from 'pino';

export function createLogger(
  level: ProxyConfig['log_level'],
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      name: 'pgvpd',
      level,
      redact: { paths: ['password', 'token', '*.password', '*.token'], censor: '[redacted]' },
    },
    destination,
  );
}
