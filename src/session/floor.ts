import { FRAME_MS } from '../audio/format.js';
import type { TurnConfig } from '../config.js';

/**
 * Barge-in as a pure reducer: whether the agent's audio is held because the caller may be taking the floor.
 * The session applies the actions (pause or resume the pacer, cut the reply); this decides them, and only this.
 */
export interface FloorState {
  /** Agent audio is paused on a caller sound not yet known to be an interruption. */
  readonly paused: boolean;
  /** Frames since the pause in which the caller made no sound (for pauseTimeoutMs). */
  readonly quietFrames: number;
}

export const AGENT_HAS_FLOOR: FloorState = { paused: false, quietFrames: 0 };

export type FloorEvent =
  /**
   * A loud frame (energy onset) or the VAD's first voiced frame. `holdAudio` false: the sound may be the line's
   * echo (not yet known), so the agent goes on while the sound is weighed, and only words interrupt it.
   */
  | { kind: 'caller_sound'; agentAudible: boolean; bargeInAllowed: boolean; holdAudio: boolean }
  /** The sound stopped before it became speech (a click). */
  | { kind: 'sound_rejected' }
  /** One caller frame has been handled: where the caller's speech stands. */
  | { kind: 'frame'; callerActive: boolean; callerInSpeech: boolean; speechMs: number; partial: string }
  /** The caller's turn ended and is not one to answer over the agent (a backchannel, a noise). */
  | { kind: 'turn_ignored' }
  /** The reply was cut (by the caller, the client or a notice). */
  | { kind: 'reply_cut' };

export type FloorAction = 'pause' | 'resume' | 'interrupt' | null;

export type FloorConfig = Pick<TurnConfig, 'minInterruptionMs' | 'pauseTimeoutMs' | 'backchannels'>;

export function nextFloor(state: FloorState, event: FloorEvent, config: FloorConfig): { state: FloorState; action: FloorAction } {
  const stay = { state, action: null };
  const resume = { state: AGENT_HAS_FLOOR, action: 'resume' as const };
  switch (event.kind) {
    case 'caller_sound':
      // Silence the agent the moment the caller makes a sound; resume if it proves to be nothing.
      if (!event.bargeInAllowed || !event.agentAudible || state.paused) return stay;
      return { state: { paused: true, quietFrames: 0 }, action: event.holdAudio ? 'pause' : null };
    case 'sound_rejected':
    case 'turn_ignored':
      return state.paused ? resume : stay;
    case 'reply_cut':
      return { state: AGENT_HAS_FLOOR, action: null };
    case 'frame': {
      if (!state.paused) return stay;
      // Enough speech that is not "mhm" or "ok": the caller has taken the floor.
      if (event.callerInSpeech && event.speechMs >= config.minInterruptionMs && !(event.partial && isBackchannel(event.partial, config.backchannels))) {
        // The floor opens when the cut is done (reply_cut): with no reply left to cut, the pause stands.
        return { state, action: 'interrupt' };
      }
      if (event.callerActive) return stay;
      // A pause the VAD never confirmed as speech (a cough, a door): let the agent go on.
      const quietFrames = state.quietFrames + 1;
      if (quietFrames * FRAME_MS >= config.pauseTimeoutMs) return resume;
      return { state: { paused: true, quietFrames }, action: null };
    }
  }
}

/** True when every word of `text` is a backchannel ("ok", "mhm"); empty text is not. */
export function isBackchannel(text: string, backchannels: readonly string[]): boolean {
  const normalized = text.toLowerCase().replace(/[^\p{L}\p{N}\s'-]/gu, ' ').trim();
  if (!normalized) return false;
  if (backchannels.includes(normalized)) return true;
  return normalized.split(/\s+/).every((word) => backchannels.includes(word));
}
