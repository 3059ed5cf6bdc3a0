/**
 * Everything a session tells the outside world. Transports serialise these (the device WebSocket sends them
 * as JSON text messages, WebRTC on a data channel); audio travels separately as frames.
 */

/** Per-turn latency breakdown, ms. A stage that did not run in the turn is absent. */
export interface TurnStages {
  /** Silence waited after the last voiced frame before the turn was ended. */
  endpointMs?: number;
  /** ASR finalize() call → final transcript. */
  asrFinalMs?: number;
  /** LLM request → first text (or tool call) out of the model. */
  llmFirstTokenMs?: number;
  /** First clause handed to TTS → its first audio. */
  ttsFirstAudioMs?: number;
  /** Time spent in tool calls during the turn. */
  toolsMs?: number;
  /** Last voiced caller frame (as it reached the server) → first agent audio frame handed to the transport. */
  serverV2vMs?: number;
}

export interface TurnMetrics {
  turn: number;
  stages: TurnStages;
  /** True when the reply was started before the endpoint and was ready in time. */
  preemptive: boolean;
  /** Preemptive replies started and thrown away in this turn because the caller went on. */
  discardedPreemptive: number;
}

export type ErrorCode =
  | 'invalid_json'
  | 'unknown_message'
  | 'invalid_message'
  | 'invalid_frame_size'
  | 'invalid_audio'
  | 'unsupported_codec'
  | 'message_too_large'
  | 'not_ready'
  | 'asr_failed'
  | 'llm_failed'
  | 'tts_failed'
  | 'internal_error'
  | 'rate_limited'
  | 'session_limit'
  | 'unknown_agent'
  | 'unknown_number'
  | 'slow_consumer';

export type SessionEvent =
  | { type: 'session.started'; callId: string; language: string; audio: { input: AudioFormatSpec; output: AudioFormatSpec }; replies?: 'audio' | 'text' }
  | { type: 'session.updated'; audio: { input: AudioFormatSpec; output: AudioFormatSpec }; language: string }
  | { type: 'speech.started'; turn: number; atMs: number }
  | { type: 'speech.stopped'; turn: number; atMs: number }
  | { type: 'transcript.partial'; turn: number; text: string; language: string }
  /** `understood: false`: speech the recogniser could not match to anything the agent handles (it is answered). */
  | { type: 'transcript.final'; turn: number; text: string; language: string; understood?: false }
  | { type: 'response.started'; turn: number; responseId: string }
  | { type: 'response.text.delta'; turn: number; responseId: string; text: string }
  | { type: 'response.tool_call'; turn: number; responseId: string; name: string; arguments: string; toolCallId: string }
  | { type: 'response.audio.started'; turn: number; responseId: string }
  | { type: 'response.done'; turn: number; responseId: string; text: string; status: 'completed' | 'interrupted' | 'failed' }
  | { type: 'response.interrupted'; turn: number; responseId: string; heardText: string }
  | { type: 'audio.clear' }
  | { type: 'turn.metrics'; turn: number; metrics: TurnMetrics }
  | { type: 'call.action'; action: 'hangup' }
  /** The queue only: the target and the summary stay on the server (`Session.handover`). */
  | { type: 'call.action'; action: 'transfer'; queue?: string }
  | { type: 'dtmf.received'; digit: string }
  | { type: 'error'; code: ErrorCode; message: string };

export type SessionEventType = SessionEvent['type'];

/** Wire format of audio at a transport edge. */
export interface AudioFormatSpec {
  codec: 'pcm16' | 'pcmu' | 'pcma' | 'opus';
  sampleRate: number;
}
