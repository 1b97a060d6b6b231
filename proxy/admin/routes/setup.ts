// GET /setup, /setup.js, /setup.css: the self-service page's files (read at start; 404 when
// absent), with a strict Content-Security-Policy (no inline or third-party script, no framing,
// no form posts), no referrer, no sniffing, and a browsing context of its own.
import type { FastifyInstance, FastifyReply } from 'fastify';
import { apiErrors } from '../api-error.js';
import type { AdminContext } from '../context.js';
import type { SetupFile } from '../setup-files.js';

export const setupCsp =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

function serve(reply: FastifyReply, file: SetupFile | undefined): FastifyReply {
  if (file === undefined) throw apiErrors.notFound('the setup page is not installed');
  return reply
    .header('content-security-policy', setupCsp)
    .header('cross-origin-opener-policy', 'same-origin')
    .type(file.contentType)
    .send(file.body);
}

export function setupRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { html, js, css } = ctx.setupFiles;
  const config = { auth: 'public', limit: 'setup' } as const;
  app.get('/setup', { config }, (_request, reply) => serve(reply, html));
  app.get('/setup.js', { config }, (_request, reply) => serve(reply, js));
  app.get('/setup.css', { config }, (_request, reply) => serve(reply, css));
}
