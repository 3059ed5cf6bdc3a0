import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../src/config.js';
import { AGENT_HAS_FLOOR, nextFloor, type FloorEvent, type FloorState } from '../../src/session/floor.js';

const config = DEFAULT_CONFIG.turn; // minInterruptionMs 300, pauseTimeoutMs 240
const sound = { kind: 'caller_sound', agentAudible: true, bargeInAllowed: true, holdAudio: true } as const satisfies FloorEvent;
const frame = (over: Partial<Extract<FloorEvent, { kind: 'frame' }>> = {}): FloorEvent => ({
  kind: 'frame',
  callerActive: true,
  callerInSpeech: true,
  speechMs: 100,
  partial: '',
  ...over,
});

/** Apply events in order; returns the actions taken and the final state. */
function run(events: FloorEvent[], state: FloorState = AGENT_HAS_FLOOR) {
  const actions: string[] = [];
  for (const event of events) {
    const next = nextFloor(state, event, config);
    state = next.state;
    if (next.action) actions.push(next.action);
  }
  return { actions, state };
}

describe('floor (barge-in reducer)', () => {
  it('pauses on a caller sound only while the agent is audible and barge-in is allowed', () => {
    expect(run([sound]).actions).toEqual(['pause']);
    expect(run([{ ...sound, agentAudible: false }]).actions).toEqual([]);
    expect(run([{ ...sound, bargeInAllowed: false }]).actions).toEqual([]);
    expect(run([sound, sound]).actions).toEqual(['pause']);
  });

  it('interrupts on minInterruptionMs of speech, but not when the words so far are a backchannel', () => {
    expect(run([sound, frame({ speechMs: 280 }), frame({ speechMs: 300 })]).actions).toEqual(['pause', 'interrupt']);
    expect(run([sound, frame({ speechMs: 300, partial: 'mhm ok' })]).actions).toEqual(['pause']);
    expect(run([sound, frame({ speechMs: 300, partial: 'ok wait' })]).actions).toEqual(['pause', 'interrupt']);
    // Not while unpaused: an agent that was not talking has nothing to cut.
    expect(run([frame({ speechMs: 1000 })]).actions).toEqual([]);
  });

  it('keeps the pause until the reply is cut, and resumes after pauseTimeoutMs of quiet after a sound that was nothing', () => {
    const interrupted = run([sound, frame({ speechMs: 300 })]);
    expect(interrupted.state.paused).toBe(true);
    expect(run([{ kind: 'reply_cut' }], interrupted.state).state).toEqual(AGENT_HAS_FLOOR);

    const quiet = (n: number) => Array.from({ length: n }, () => frame({ callerActive: false, callerInSpeech: false, speechMs: 0 }));
    expect(run([sound, ...quiet(11)]).actions).toEqual(['pause']);
    expect(run([sound, ...quiet(12)]).actions).toEqual(['pause', 'resume']);
    expect(run([sound, { kind: 'sound_rejected' }]).actions).toEqual(['pause', 'resume']);
    expect(run([sound, frame({ speechMs: 200, partial: 'mhm' }), { kind: 'turn_ignored' }]).actions).toEqual(['pause', 'resume']);
  });

  it('while the line\'s echo is not yet known, weighs a sound without holding the agent: only words interrupt', () => {
    const unsure = { ...sound, holdAudio: false };
    expect(run([unsure]).actions).toEqual([]);
    expect(run([unsure]).state.paused).toBe(true);
    expect(run([unsure, frame({ speechMs: 280 }), frame({ speechMs: 300 })]).actions).toEqual(['interrupt']);
    expect(run([unsure, frame({ speechMs: 300, partial: 'mhm' })]).actions).toEqual([]);
  });
});
