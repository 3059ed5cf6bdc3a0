import type { FastifyPluginAsync } from 'fastify';
import type { Auth } from '../auth/auth.js';
import type { CallStore } from './call-store.js';

/** `GET /v1/calls/:id`: a call's transcript and turn metrics. API keys only: session tokens are for callers. */
export const callRoutes: FastifyPluginAsync<{ auth: Auth; store: CallStore }> = async (app, { auth, store }) => {
  app.get<{ Params: { id: string } }>(
    '/v1/calls/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 128 } }, required: ['id'] } } },
    async (request, reply) => {
      if (auth.required) {
        const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
        if (!bearer || !auth.verifyApiKey(bearer)) {
          request.log.warn({ ip: request.ip }, 'call record request without a valid API key');
          return reply.code(401).send({ error: bearer ? 'invalid_credentials' : 'missing_credentials', message: 'an API key is required' });
        }
      }
      const record = store.get(request.params.id);
      if (!record) return reply.code(404).send({ error: 'not_found', message: `no call ${request.params.id}` });
      return record;
    },
  );
};
