import type { ErrorCode } from '../session/events.js';

/**
 * The device protocol's client messages (docs/protocol.md), parsed strictly: shared by every transport that
 * speaks that vocabulary (the device WebSocket, the WebRTC data channel).
 */
export type ClientMessage =
  | { type: 'session.update'; audio?: { input?: unknown; output?: unknown }; language?: string }
  | { type: 'input.commit' }
  | { type: 'input.text'; text: string }
  | { type: 'input.dtmf'; digit: string }
  | { type: 'response.cancel' }
  | { type: 'session.end' }
  | { type: 'ping'; id?: string | number };

export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function parseClientMessage(text: string): ClientMessage {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError('invalid_json', 'message is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('invalid_message', 'message must be a JSON object');
  const type: unknown = Reflect.get(value, 'type');
  if (typeof type !== 'string') throw new ProtocolError('invalid_message', 'message needs a string "type"');
  switch (type) {
    case 'session.update': {
      const audio: unknown = Reflect.get(value, 'audio');
      const language: unknown = Reflect.get(value, 'language');
      if (audio !== undefined && (typeof audio !== 'object' || audio === null)) throw new ProtocolError('invalid_message', '"audio" must be an object');
      if (language !== undefined && (typeof language !== 'string' || !/^[a-z]{2,3}(-[A-Za-z0-9]+)*$/.test(language))) {
        throw new ProtocolError('invalid_message', '"language" must be a BCP-47 tag such as "en" or "fr-FR"');
      }
      return { type, audio: audio as { input?: unknown; output?: unknown } | undefined, language: language as string | undefined };
    }
    case 'input.commit':
    case 'response.cancel':
    case 'session.end':
      return { type };
    case 'input.text': {
      const text: unknown = Reflect.get(value, 'text');
      if (typeof text !== 'string' || !text.trim() || text.length > 4000) throw new ProtocolError('invalid_message', '"text" must be a non-empty string of at most 4000 characters');
      return { type, text };
    }
    case 'input.dtmf': {
      const digit: unknown = Reflect.get(value, 'digit');
      if (typeof digit !== 'string' || !/^[0-9*#A-D]$/.test(digit)) throw new ProtocolError('invalid_message', '"digit" must be one of 0-9 * # A-D');
      return { type, digit };
    }
    case 'ping': {
      const id: unknown = Reflect.get(value, 'id');
      return { type, id: typeof id === 'string' || typeof id === 'number' ? id : undefined };
    }
    default:
      throw new ProtocolError('unknown_message', `unknown message type "${type.slice(0, 64)}"`);
  }
}

