/**
 * OpenAI Realtime protocol: validation of client events and the audio formats it names. Shapes follow the
 * GA API (`session.type: "realtime"`, `audio.input.format`, `response.output_audio.delta`) as the official
 * `openai` npm package (v6, src/resources/realtime/realtime.ts) types them; the beta names
 * (`input_audio_format: "pcm16"`, top-level `turn_detection`, `modalities`) are accepted too.
 */
import type { TransportDescription } from '../kit/describe.js';
import type { CodecSpec } from '../../audio/codec.js';
import type { ToolDefinition } from '../../providers/llm/types.js';

/** An `error` event's payload: OpenAI's `{type, code, message, param, event_id}`. */
export class RealtimeProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    readonly errorType: 'invalid_request_error' | 'server_error' = 'invalid_request_error',
  ) {
    super(message);
  }
}

export type AudioFormatName = 'audio/pcm' | 'audio/pcmu' | 'audio/pcma';

export interface AudioFormat {
  type: AudioFormatName;
  /** Only for audio/pcm, always 24000 (the protocol's one PCM rate). */
  rate?: 24000;
}

export function codecFor(format: AudioFormat): CodecSpec {
  switch (format.type) {
    case 'audio/pcm':
      return { codec: 'pcm16', sampleRate: 24000 };
    case 'audio/pcmu':
      return { codec: 'pcmu', sampleRate: 8000 };
    case 'audio/pcma':
      return { codec: 'pcma', sampleRate: 8000 };
  }
}

/** Beta name of a format (`input_audio_format`), for beta clients. */
export function betaFormatName(format: AudioFormat): 'pcm16' | 'g711_ulaw' | 'g711_alaw' {
  return format.type === 'audio/pcm' ? 'pcm16' : format.type === 'audio/pcmu' ? 'g711_ulaw' : 'g711_alaw';
}

export interface TurnDetection {
  type: 'server_vad' | 'semantic_vad';
  createResponse: boolean;
  interruptResponse: boolean;
}

export interface ClientTool {
  type: 'function';
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

/** What a session.update asks for; absent fields keep their value. */
export interface SessionPatch {
  instructions?: string;
  voice?: string;
  speed?: number;
  inputFormat?: AudioFormat;
  outputFormat?: AudioFormat;
  /** null: no turn detection (the client commits turns). */
  turnDetection?: TurnDetection | null;
  tools?: ClientTool[];
  toolChoice?: string;
  outputModalities?: ('audio' | 'text')[];
  transcriptionLanguage?: string;
}

export type ItemInput =
  | { kind: 'message'; id?: string; role: 'user' | 'assistant' | 'system'; text: string }
  | { kind: 'function_call_output'; id?: string; callId: string; output: string }
  | { kind: 'function_call'; id?: string; callId: string; name: string; arguments: string };

export type ClientEvent =
  | { type: 'session.update'; eventId?: string; patch: SessionPatch }
  | { type: 'input_audio_buffer.append'; eventId?: string; audio: Buffer }
  | { type: 'input_audio_buffer.commit'; eventId?: string }
  | { type: 'input_audio_buffer.clear'; eventId?: string }
  | { type: 'output_audio_buffer.clear'; eventId?: string }
  | { type: 'conversation.item.create'; eventId?: string; item: ItemInput; previousItemId?: string }
  | { type: 'conversation.item.truncate'; eventId?: string; itemId: string; contentIndex: number; audioEndMs: number }
  | { type: 'conversation.item.delete'; eventId?: string; itemId: string }
  | { type: 'conversation.item.retrieve'; eventId?: string; itemId: string }
  | { type: 'response.create'; eventId?: string }
  | { type: 'response.cancel'; eventId?: string; responseId?: string };

const MAX_INSTRUCTIONS = 32_000;
const MAX_TEXT = 16_000;
const MAX_TOOLS = 128;
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(param: string, message: string): RealtimeProtocolError {
  return new RealtimeProtocolError('invalid_value', message, param);
}

function optionalString(obj: Json, key: string, param: string, max = MAX_TEXT): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(param, `${param} must be a string`);
  if (v.length > max) throw invalid(param, `${param} is longer than ${max} characters`);
  return v;
}

function requiredString(obj: Json, key: string, param: string, max = MAX_TEXT): string {
  const v = optionalString(obj, key, param, max);
  if (v === undefined || v === '') throw new RealtimeProtocolError('missing_required_parameter', `missing required parameter ${param}`, param);
  return v;
}

/** Strict base64 (what the protocol sends), so a corrupted chunk is reported instead of played as noise. */
export function decodeBase64(value: unknown, param: string): Buffer {
  if (typeof value !== 'string') throw invalid(param, `${param} must be a base64 string`);
  if (value.length % 4 !== 0 || !BASE64.test(value)) throw invalid(param, `${param} is not valid base64`);
  return Buffer.from(value, 'base64');
}

function parseFormat(value: unknown, param: string): AudioFormat {
  // Beta: a bare string.
  if (value === 'pcm16') return { type: 'audio/pcm', rate: 24000 };
  if (value === 'g711_ulaw') return { type: 'audio/pcmu' };
  if (value === 'g711_alaw') return { type: 'audio/pcma' };
  if (!isObject(value)) throw invalid(param, `${param} must be {"type": "audio/pcm" | "audio/pcmu" | "audio/pcma"}`);
  const type = value.type ?? 'audio/pcm';
  if (type === 'audio/pcm') {
    if (value.rate !== undefined && value.rate !== 24000) throw invalid(`${param}.rate`, `${param}.rate must be 24000 for audio/pcm`);
    return { type, rate: 24000 };
  }
  if (type === 'audio/pcmu' || type === 'audio/pcma') return { type };
  throw invalid(`${param}.type`, `unsupported audio format ${JSON.stringify(type)}; expected audio/pcm, audio/pcmu or audio/pcma`);
}

function parseTurnDetection(value: unknown, param: string): TurnDetection | null {
  if (value === null) return null;
  if (!isObject(value)) throw invalid(param, `${param} must be an object or null`);
  const type = value.type;
  if (type !== 'server_vad' && type !== 'semantic_vad') throw invalid(`${param}.type`, `${param}.type must be "server_vad", "semantic_vad" or null`);
  for (const key of ['create_response', 'interrupt_response'] as const) {
    if (value[key] !== undefined && typeof value[key] !== 'boolean') throw invalid(`${param}.${key}`, `${param}.${key} must be a boolean`);
  }
  for (const key of ['threshold', 'silence_duration_ms', 'prefix_padding_ms'] as const) {
    if (value[key] !== undefined && (typeof value[key] !== 'number' || !Number.isFinite(value[key]) || value[key] < 0)) {
      throw invalid(`${param}.${key}`, `${param}.${key} must be a non-negative number`);
    }
  }
  return { type, createResponse: value.create_response !== false, interruptResponse: value.interrupt_response !== false };
}

function parseTools(value: unknown): ClientTool[] {
  if (!Array.isArray(value)) throw invalid('session.tools', 'session.tools must be an array');
  if (value.length > MAX_TOOLS) throw invalid('session.tools', `at most ${MAX_TOOLS} tools`);
  const names = new Set<string>();
  return value.map((tool: unknown, i) => {
    const param = `session.tools[${i}]`;
    if (!isObject(tool)) throw invalid(param, `${param} must be an object`);
    if (tool.type !== undefined && tool.type !== 'function') throw invalid(`${param}.type`, `only "function" tools are supported (got ${JSON.stringify(tool.type)})`);
    const name = requiredString(tool, 'name', `${param}.name`, 64);
    if (!TOOL_NAME.test(name)) throw invalid(`${param}.name`, `${param}.name must match ${TOOL_NAME.source}`);
    if (names.has(name)) throw invalid(`${param}.name`, `duplicate tool name "${name}"`);
    names.add(name);
    const parameters = tool.parameters ?? { type: 'object', properties: {} };
    if (!isObject(parameters)) throw invalid(`${param}.parameters`, `${param}.parameters must be a JSON schema object`);
    return { type: 'function', name, description: optionalString(tool, 'description', `${param}.description`) ?? '', parameters };
  });
}

function parseSessionPatch(session: unknown): SessionPatch {
  if (!isObject(session)) throw invalid('session', 'session must be an object');
  if (session.type !== undefined && session.type !== 'realtime') {
    throw invalid('session.type', `session.type ${JSON.stringify(session.type)} is not supported here; use "realtime"`);
  }
  const patch: SessionPatch = {};
  patch.instructions = optionalString(session, 'instructions', 'session.instructions', MAX_INSTRUCTIONS);
  const audio = session.audio;
  if (audio !== undefined) {
    if (!isObject(audio)) throw invalid('session.audio', 'session.audio must be an object');
    const input = audio.input;
    if (input !== undefined) {
      if (!isObject(input)) throw invalid('session.audio.input', 'session.audio.input must be an object');
      if (input.format !== undefined) patch.inputFormat = parseFormat(input.format, 'session.audio.input.format');
      if (input.turn_detection !== undefined) patch.turnDetection = parseTurnDetection(input.turn_detection, 'session.audio.input.turn_detection');
      if (isObject(input.transcription)) patch.transcriptionLanguage = optionalString(input.transcription, 'language', 'session.audio.input.transcription.language', 16);
    }
    const output = audio.output;
    if (output !== undefined) {
      if (!isObject(output)) throw invalid('session.audio.output', 'session.audio.output must be an object');
      if (output.format !== undefined) patch.outputFormat = parseFormat(output.format, 'session.audio.output.format');
      patch.voice = optionalString(output, 'voice', 'session.audio.output.voice', 64);
      if (output.speed !== undefined) {
        if (typeof output.speed !== 'number' || output.speed < 0.25 || output.speed > 1.5) throw invalid('session.audio.output.speed', 'speed must be a number between 0.25 and 1.5');
        patch.speed = output.speed;
      }
    }
  }
  // Beta spellings.
  if (session.input_audio_format !== undefined) patch.inputFormat = parseFormat(session.input_audio_format, 'session.input_audio_format');
  if (session.output_audio_format !== undefined) patch.outputFormat = parseFormat(session.output_audio_format, 'session.output_audio_format');
  if (session.turn_detection !== undefined) patch.turnDetection = parseTurnDetection(session.turn_detection, 'session.turn_detection');
  if (session.voice !== undefined) patch.voice = optionalString(session, 'voice', 'session.voice', 64);
  if (isObject(session.input_audio_transcription)) {
    patch.transcriptionLanguage = optionalString(session.input_audio_transcription, 'language', 'session.input_audio_transcription.language', 16);
  }
  const modalities = session.output_modalities ?? session.modalities;
  if (modalities !== undefined) {
    if (!Array.isArray(modalities) || modalities.length === 0 || !modalities.every((m) => m === 'audio' || m === 'text')) {
      throw invalid('session.output_modalities', 'output_modalities must be ["audio"] or ["text"]');
    }
    patch.outputModalities = modalities as ('audio' | 'text')[];
  }
  if (session.tools !== undefined) patch.tools = parseTools(session.tools);
  if (session.tool_choice !== undefined) {
    const choice = session.tool_choice;
    if (choice === 'auto' || choice === 'none' || choice === 'required') patch.toolChoice = choice;
    else throw invalid('session.tool_choice', 'tool_choice must be "auto", "none" or "required"');
  }
  if (patch.transcriptionLanguage !== undefined && !/^[a-z]{2,3}(-[A-Za-z0-9]+)*$/.test(patch.transcriptionLanguage)) {
    throw invalid('session.audio.input.transcription.language', 'language must be a code such as "en" or "fr"');
  }
  return patch;
}

function contentText(content: unknown, param: string): string {
  if (!Array.isArray(content) || content.length === 0) throw invalid(param, `${param} must be a non-empty array`);
  const parts: string[] = [];
  content.forEach((part: unknown, i) => {
    const p = `${param}[${i}]`;
    if (!isObject(part)) throw invalid(p, `${p} must be an object`);
    switch (part.type) {
      case 'input_text':
      case 'text':
      case 'output_text':
        parts.push(requiredString(part, 'text', `${p}.text`));
        break;
      case 'input_audio':
      case 'output_audio':
      case 'audio': {
        // Only the transcript is used: audio for the agent to hear goes through input_audio_buffer.append.
        const transcript = optionalString(part, 'transcript', `${p}.transcript`);
        if (!transcript) {
          throw new RealtimeProtocolError(
            'unsupported_content',
            `${p}: audio content needs a "transcript"; stream audio for the agent to hear with input_audio_buffer.append`,
            p,
          );
        }
        parts.push(transcript);
        break;
      }
      default:
        throw invalid(`${p}.type`, `unsupported content type ${JSON.stringify(part.type)}`);
    }
  });
  return parts.join(' ');
}

function parseItem(item: unknown): ItemInput {
  if (!isObject(item)) throw invalid('item', 'item must be an object');
  const id = optionalString(item, 'id', 'item.id', 64);
  switch (item.type) {
    case 'message': {
      const role = item.role;
      if (role !== 'user' && role !== 'assistant' && role !== 'system') throw invalid('item.role', 'item.role must be "user", "assistant" or "system"');
      return { kind: 'message', id, role, text: contentText(item.content, 'item.content') };
    }
    case 'function_call_output':
      return { kind: 'function_call_output', id, callId: requiredString(item, 'call_id', 'item.call_id', 128), output: optionalString(item, 'output', 'item.output') ?? '' };
    case 'function_call':
      return {
        kind: 'function_call',
        id,
        callId: requiredString(item, 'call_id', 'item.call_id', 128),
        name: requiredString(item, 'name', 'item.name', 64),
        arguments: optionalString(item, 'arguments', 'item.arguments') ?? '',
      };
    default:
      throw invalid('item.type', `unsupported item type ${JSON.stringify(item.type)}; expected message, function_call or function_call_output`);
  }
}

/** Parse one text frame; throws RealtimeProtocolError (with the event_id when one could be read). */
export function parseClientEvent(text: string): ClientEvent {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RealtimeProtocolError('invalid_json', 'the event is not valid JSON');
  }
  if (!isObject(value)) throw new RealtimeProtocolError('invalid_json', 'the event must be a JSON object');
  const eventId = typeof value.event_id === 'string' ? value.event_id.slice(0, 128) : undefined;
  const type = value.type;
  if (typeof type !== 'string') throw new RealtimeProtocolError('missing_required_parameter', 'missing required parameter "type"', 'type');
  switch (type) {
    case 'session.update':
      return { type, eventId, patch: parseSessionPatch(value.session) };
    case 'input_audio_buffer.append':
      return { type, eventId, audio: decodeBase64(value.audio, 'audio') };
    case 'input_audio_buffer.commit':
    case 'input_audio_buffer.clear':
    case 'output_audio_buffer.clear':
    case 'response.create':
      return { type, eventId };
    case 'response.cancel':
      return { type, eventId, responseId: optionalString(value, 'response_id', 'response_id', 128) };
    case 'conversation.item.create':
      return { type, eventId, item: parseItem(value.item), previousItemId: optionalString(value, 'previous_item_id', 'previous_item_id', 128) };
    case 'conversation.item.truncate': {
      const audioEndMs = value.audio_end_ms;
      const contentIndex = value.content_index ?? 0;
      if (typeof audioEndMs !== 'number' || !Number.isInteger(audioEndMs) || audioEndMs < 0) throw invalid('audio_end_ms', 'audio_end_ms must be a non-negative integer');
      if (typeof contentIndex !== 'number' || !Number.isInteger(contentIndex) || contentIndex < 0) throw invalid('content_index', 'content_index must be a non-negative integer');
      return { type, eventId, itemId: requiredString(value, 'item_id', 'item_id', 128), contentIndex, audioEndMs };
    }
    case 'conversation.item.delete':
    case 'conversation.item.retrieve':
      return { type, eventId, itemId: requiredString(value, 'item_id', 'item_id', 128) };
    default:
      throw new RealtimeProtocolError('invalid_value', `unknown event type ${JSON.stringify(type.slice(0, 64))}`, 'type');
  }
}

/** The event_id of a frame that failed to parse, when it can still be read (for the error event). */
export function eventIdOf(text: string): string | null {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) && typeof value.event_id === 'string' ? value.event_id.slice(0, 128) : null;
  } catch {
    return null;
  }
}

export function toToolDefinition(tool: ClientTool): ToolDefinition {
  return { name: tool.name, description: tool.description, parameters: tool.parameters };
}

/** The OpenAI-compatible realtime socket: JSON events, audio base64 inside them in the protocol's three formats. */
export const describeRealtime = (): TransportDescription => ({
  name: 'realtime',
  door: 'GET /v1/realtime (WebSocket)',
  enabled: true,
  audio: ['pcm16/24000', 'pcmu/8000', 'pcma/8000'],
  control: 'OpenAI Realtime events, GA and beta (docs/realtime.md)',
});
