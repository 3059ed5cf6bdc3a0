/**
 * What happens to a phone call after its media stream: Twilio requests `<Connect action="…">` when the stream
 * ends, and this service answers from what the agent decided (docs/telephony.md#handing-over): `<Dial>` the
 * queue's target with the call's context when it transferred, `<Hangup/>` when it ended the call.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../../auth/auth.js';
import { defaultQueue, summarize, targetFor, twimlFor, type Handover, type HandoverFacts } from '../../integration/handover.js';
import type { VoiceService } from '../../service.js';
import { verifyTwilioSignature } from './twilio-signature.js';

/** How long a decision waits for the provider's request, and how many calls' decisions are kept at most. */
const OUTCOME_TTL_MS = 10 * 60_000;
const MAX_OUTCOMES = 10_000;

/** The agent's last decision per provider call id (CallSid): a transfer with its context, or a hang-up. */
export class CallOutcomes {
  private readonly outcomes = new Map<string, { handover: Handover | null; expiresAt: number }>();

  record(providerCallId: string, handover: Handover | null): void {
    const now = Date.now();
    for (const [id, o] of this.outcomes) {
      if (o.expiresAt > now && this.outcomes.size < MAX_OUTCOMES) break;
      this.outcomes.delete(id); // oldest first: insertion order
    }
    this.outcomes.delete(providerCallId);
    this.outcomes.set(providerCallId, { handover, expiresAt: now + OUTCOME_TTL_MS });
  }

  /** The decision for this call, once; undefined when this process made none (another node's call, or a second request). */
  take(providerCallId: string): Handover | null | undefined {
    const o = this.outcomes.get(providerCallId);
    if (!o || o.expiresAt <= Date.now()) return undefined;
    const { handover } = o;
    // Answered: a replay of the request hangs up rather than dialling again.
    o.handover = null;
    return handover;
  }
}

/** `POST /v1/telephony/twilio/connect-action`: Twilio-signed (or API key), form-encoded, answered with TwiML. */
export function connectActionRoutes(app: FastifyInstance, service: VoiceService, outcomes: CallOutcomes, publicUrls: (request: FastifyRequest) => string[]): void {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });
  app.post('/v1/telephony/twilio/connect-action', async (request: FastifyRequest, reply: FastifyReply) => {
    const params = isStringRecord(request.body) ? request.body : {};
    if (!(await admitted(service, request, reply, params, publicUrls))) return;
    const callSid = params.CallSid ?? '';
    const valid = /^[A-Za-z0-9]{1,64}$/.test(callSid);
    // This process's own decision first; else the shared call record (the stream ran on another node, or on one that died).
    const own = valid ? outcomes.take(callSid) : null;
    const handover = own !== undefined ? own : await handoverFromRecord(service, callSid);
    request.log.info({ providerCallId: callSid, queue: handover?.queue ?? null, reason: handover?.reason ?? null, dial: Boolean(handover?.target) }, 'twilio connect action answered');
    return reply.type('text/xml; charset=utf-8').send(twimlFor(handover));
  });
}

/** How long a call record still open is watched for its end before its node is taken for dead. */
const OPEN_RECORD_WAIT_MS = 2000;

/**
 * What to do with a call this process has no decision for, from the call record (shared across nodes on
 * PostgreSQL): a transfer is dialled as recorded; a call that ended normally hangs up; a call whose node was lost
 * (`node_lost`, or still open after OPEN_RECORD_WAIT_MS although its stream is gone) goes to a person on the
 * default queue rather than silence. A call the record does not know hangs up.
 */
async function handoverFromRecord(service: VoiceService, callSid: string): Promise<Handover | null> {
  const callId = await service.store.idForNetworkId(callSid);
  if (!callId) return null;
  const deadline = performance.now() + OPEN_RECORD_WAIT_MS;
  let record = await service.store.get(callId, service.networkCallsOwner);
  // A node that is alive writes the end of its call within its flush interval.
  while (record && record.ended_at === null && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    record = await service.store.get(callId, service.networkCallsOwner);
  }
  if (!record) return null;
  const lastWords = record.transcript.findLast((t) => t.role === 'caller')?.text;
  const facts: HandoverFacts = {
    language: record.transcript.at(-1)?.language ?? service.config.agent.defaultLanguage,
    intents: [],
    slots: {},
    ...(lastWords ? { lastWords } : {}),
    notUnderstood: record.transcript.filter((t) => t.status === 'not_understood').length,
    caller: record.customer_id ? { customer_id: record.customer_id } : ({} as Record<string, string>),
  };
  if (record.transfer) {
    const { queue, reason, target } = record.transfer;
    return { callId, queue, ...(reason ? { reason } : {}), ...(target ? { target } : {}), summary: summarize(facts), facts };
  }
  if (record.ended_at !== null && record.end_reason !== 'node_lost') return null;
  const config = service.providers.handover;
  const queue = defaultQueue(config);
  const target = targetFor(config, queue, service.config.sip.transferTarget);
  return { callId, queue, reason: 'node_lost', ...(target ? { target } : {}), summary: summarize(facts, config?.summaryMaxChars), facts };
}

/** Twilio's signature over the URL and the POST parameters when an auth token is set; otherwise an API key. */
async function admitted(service: VoiceService, request: FastifyRequest, reply: FastifyReply, params: Record<string, string>, publicUrls: (request: FastifyRequest) => string[]): Promise<boolean> {
  const authToken = service.config.telephony.twilio.authToken;
  if (authToken) {
    const header = request.headers['x-twilio-signature'];
    const signature = Array.isArray(header) ? header[0] : header;
    if (verifyTwilioSignature(authToken, signature, publicUrls(request), params)) return true;
    request.log.warn({ ip: request.ip, signed: Boolean(signature) }, 'twilio connect action refused: bad signature');
    await reply.code(403).send({ error: 'invalid_signature', message: 'X-Twilio-Signature does not match this URL, its parameters and the configured auth token' });
    return false;
  }
  try {
    const query = request.query as Record<string, string | undefined> | undefined;
    await service.auth.authenticate({ authorization: request.headers.authorization, token: query?.token });
    return true;
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    await reply.code(err.statusCode).send({ error: err.code, message: err.message });
    return false;
  }
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}
