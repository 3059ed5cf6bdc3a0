import type { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Auth } from '../auth/auth.js';
import { requireAdminKey } from '../auth/plugin.js';
import type { CallStore, SubjectQuery } from './call-store.js';

/** The API key id of a request for a record, or null once a 401 has been sent. */
async function ownerOf(auth: Auth, request: FastifyRequest, reply: FastifyReply): Promise<string | null> {
  if (!auth.required) return 'anonymous';
  const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
  const principal = bearer ? auth.verifyApiKey(bearer) : null;
  if (!principal) {
    request.log.warn({ ip: request.ip }, 'call record request without a valid API key');
    await reply.code(401).send({ error: bearer ? 'invalid_credentials' : 'missing_credentials', message: 'an API key is required' });
    return null;
  }
  return principal.keyId;
}

const idParams = { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 128 } }, required: ['id'] };

/**
 * `GET /v1/calls/:id`: a call's transcript and turn metrics; `GET /v1/calls/:id/recording`: its audio (Ogg Opus).
 * API keys only (session tokens are for callers), and only the key that placed the call (or minted the token it
 * was placed with): another key gets 404. Every read that returns something is written to the audit trail.
 */
export const callRoutes: FastifyPluginAsync<{ auth: Auth; store: CallStore }> = async (app, { auth, store }) => {
  app.get<{ Params: { id: string } }>('/v1/calls/:id', { schema: { params: idParams } }, async (request, reply) => {
    const owner = await ownerOf(auth, request, reply);
    if (owner === null) return reply;
    const record = await store.get(request.params.id, owner);
    if (!record) return reply.code(404).send({ error: 'not_found', message: `no call ${request.params.id}` });
    await store.audit(owner, 'read_call', record.id);
    return record;
  });

  app.get<{ Params: { id: string } }>('/v1/calls/:id/recording', { schema: { params: idParams } }, async (request, reply) => {
    const owner = await ownerOf(auth, request, reply);
    if (owner === null) return reply;
    const recording = await store.recording(request.params.id, owner);
    if (!recording) return reply.code(404).send({ error: 'not_found', message: `no recording of call ${request.params.id}` });
    // Streamed (an hour is about 14 MB), decrypted record by record when sealed at rest; from the database when
    // the store holds it (PostgreSQL: any node), else from this node's file.
    let audio: Readable;
    try {
      audio = await store.openRecording(request.params.id, recording.path);
    } catch (err) {
      request.log.error({ err, callId: request.params.id }, 'recording unreadable');
      return reply.code(500).send({ error: 'recording_unreadable', message: 'the recording cannot be read (file missing, or sealed with a key no longer configured)' });
    }
    // Audited as it starts (bytes: its size as stored); a tampered record further on cuts the response short.
    audio.on('error', (err) => request.log.error({ err, callId: request.params.id }, 'recording stream failed'));
    await store.audit(owner, 'read_recording', request.params.id, JSON.stringify({ bytes: recording.bytes }));
    return reply.type('audio/ogg; codecs=opus').send(audio);
  });
};

const subjectQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { caller: { type: 'string', minLength: 1, maxLength: 128 }, customer_id: { type: 'string', minLength: 1, maxLength: 128 } },
  oneOf: [{ required: ['caller'] }, { required: ['customer_id'] }],
};

function subjectOf(query: { caller?: string; customer_id?: string }): SubjectQuery {
  return query.caller !== undefined ? { caller: query.caller } : { customerId: query.customer_id ?? '' };
}

/** Which kind of identifier a request named, never its value: the audit trail must not keep what erasure removes. */
function kindOf(subject: SubjectQuery): string {
  return 'caller' in subject ? 'caller' : 'customer_id';
}

/**
 * People's rights, for admin keys only (auth.adminKeyHashes): find a person's calls by caller number or customer
 * id (`GET /v1/admin/calls?caller=`), export them (`GET /v1/admin/export?caller=`, JSON), erase them
 * (`DELETE /v1/admin/calls?caller=`), and read the audit trail (`GET /v1/admin/audit?after=&limit=`).
 */
export const adminRoutes: FastifyPluginAsync<{ auth: Auth; store: CallStore }> = async (app, { auth, store }) => {
  const preValidation = requireAdminKey(auth);
  type SubjectRequest = { Querystring: { caller?: string; customer_id?: string } };

  app.get<SubjectRequest>('/v1/admin/calls', { preValidation, schema: { querystring: subjectQuery } }, async (request) => {
    const subject = subjectOf(request.query);
    const calls = await store.findCalls(subject);
    await store.audit(request.principal?.keyId ?? 'unknown', 'search', null, JSON.stringify({ by: kindOf(subject), found: calls.length }));
    return { calls };
  });

  app.get<SubjectRequest>('/v1/admin/export', { preValidation, schema: { querystring: subjectQuery } }, async (request, reply) => {
    const subject = subjectOf(request.query);
    const calls = await store.exportCalls(subject);
    const actor = request.principal?.keyId ?? 'unknown';
    for (const call of calls) await store.audit(actor, 'export', call.id, JSON.stringify({ by: kindOf(subject) }));
    return reply.header('content-disposition', 'attachment; filename="calls-export.json"').send({ exported_at: new Date().toISOString(), calls });
  });

  app.delete<SubjectRequest>('/v1/admin/calls', { preValidation, schema: { querystring: subjectQuery } }, async (request) => {
    const subject = subjectOf(request.query);
    const erased = await store.erase(subject);
    const actor = request.principal?.keyId ?? 'unknown';
    for (const id of erased) await store.audit(actor, 'erase', id, JSON.stringify({ by: kindOf(subject) }));
    request.log.info({ calls: erased.length, by: kindOf(subject) }, 'calls erased on request');
    return { erased };
  });

  app.get<{ Querystring: { after?: number; limit?: number } }>(
    '/v1/admin/audit',
    {
      preValidation,
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { after: { type: 'integer', minimum: 0 }, limit: { type: 'integer', minimum: 1, maximum: 10_000 } },
        },
      },
    },
    async (request) => ({ entries: await store.auditLog(request.query.after ?? 0, request.query.limit ?? 1000) }),
  );
};
