import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../src/config.js';
import { ClauseSplitter } from '../src/session/clause-splitter.js';
import { TurnDetector, type TurnSignal } from '../src/session/turn-detector.js';
import { isBackchannel } from '../src/session/session.js';
import { OutputPacer, type OutboundFrame } from '../src/session/output-pacer.js';

/** Feed a probability per 20 ms frame; returns [frame index, signal] pairs. */
function run(detector: TurnDetector, probabilities: number[]): [number, TurnSignal][] {
  const out: [number, TurnSignal][] = [];
  probabilities.forEach((p, i) => {
    for (const s of detector.push(p, i * 20)) out.push([i, s]);
  });
  return out;
}

const speech = (frames: number) => Array<number>(frames).fill(0.9);
const silence = (frames: number) => Array<number>(frames).fill(0.05);

describe('TurnDetector', () => {
  const config = { ...DEFAULT_CONFIG.turn, minSpeechMs: 60, preemptiveSilenceMs: 80, endpointSilenceMs: 200 };

  it('starts a turn after minSpeechMs, prepares at preemptive silence and ends at the endpoint', () => {
    const signals = run(new TurnDetector(config), [...silence(5), ...speech(20), ...silence(15)]);
    const kinds = signals.map(([i, s]) => `${s.kind}@${i}`);
    expect(kinds).toEqual(['voice_onset@5', 'speech_start@7', 'likely_end@28', 'end_of_turn@34']);
    const end = signals.find(([, s]) => s.kind === 'end_of_turn')![1];
    expect(end).toMatchObject({ lastVoicedMs: 24 * 20, forced: false });
  });

  it('ignores clicks shorter than minSpeechMs', () => {
    const kinds = run(new TurnDetector(config), [...silence(3), ...speech(2), ...silence(20)]).map(([, s]) => s.kind);
    expect(kinds).toEqual(['voice_onset', 'voice_rejected']);
  });

  it('signals a resume when the caller goes on after a likely end, and measures silence from the new speech', () => {
    const signals = run(new TurnDetector(config), [...speech(10), ...silence(6), ...speech(10), ...silence(12)]);
    expect(signals.map(([, s]) => s.kind)).toEqual(['voice_onset', 'speech_start', 'likely_end', 'speech_resume', 'likely_end', 'end_of_turn']);
  });

  it('does not let an ambiguous frame in a pause reset the endpoint', () => {
    const signals = run(new TurnDetector(config), [...speech(10), ...silence(5), 0.45, ...silence(6)]);
    const end = signals.find(([, s]) => s.kind === 'end_of_turn');
    expect(end?.[0]).toBe(19);
  });

  it('forces the end of a turn that runs past maxTurnMs', () => {
    const signals = run(new TurnDetector({ ...config, maxTurnMs: 1000 }), speech(80));
    expect(signals.find(([, s]) => s.kind === 'end_of_turn')?.[1]).toMatchObject({ forced: true });
  });
});

describe('ClauseSplitter', () => {
  it('gives the first clause alone, then whole sentences', () => {
    const splitter = new ClauseSplitter();
    const out: string[] = [];
    for (const token of ['Sure', ', I', ' can help', '. Your table', ' for 2 is', ' booked at 7.30 pm', '. See', ' you then!']) out.push(...splitter.push(token));
    out.push(...splitter.flush());
    expect(out).toEqual(['Sure,', 'I can help.', 'Your table for 2 is booked at 7.30 pm.', 'See you then!']);
  });

  it('does not split on abbreviations or decimals', () => {
    const splitter = new ClauseSplitter();
    const out = [...splitter.push('Hello. Dr. Smith costs 3.50 euros today. Bye'), ...splitter.flush()];
    expect(out).toEqual(['Hello.', 'Dr. Smith costs 3.50 euros today.', 'Bye']);
  });

  it('cuts CJK punctuation without spaces', () => {
    const splitter = new ClauseSplitter();
    expect([...splitter.push('你好。我可以帮你'), ...splitter.flush()]).toEqual(['你好。', '我可以帮你']);
  });
});

describe('isBackchannel', () => {
  const words = DEFAULT_CONFIG.turn.backchannels;
  it('accepts only backchannel words', () => {
    expect(isBackchannel('OK.', words)).toBe(true);
    expect(isBackchannel('mhm yeah', words)).toBe(true);
    expect(isBackchannel('okay stop', words)).toBe(false);
    expect(isBackchannel('', words)).toBe(false);
  });
});

describe('OutputPacer', () => {
  it('sends at real-time pace, at most leadMs ahead, and clears at once', async () => {
    const sent: number[] = [];
    let idle = false;
    const pacer = new OutputPacer(() => sent.push(performance.now()), 60, () => (idle = true));
    const start = performance.now();
    const frame: OutboundFrame = { samples: new Int16Array(320), responseId: 'r', segment: 0 };
    for (let i = 0; i < 25; i++) pacer.enqueue(frame);
    // Right away only the lead (60 ms → 3 frames, plus the one playing) may go out.
    expect(sent.length).toBeLessThanOrEqual(4);
    await new Promise((r) => setTimeout(r, 300));
    // ~300 ms of real time → about 15 frames + lead, never all 25.
    expect(sent.length).toBeGreaterThan(12);
    expect(sent.length).toBeLessThan(22);
    const dropped = pacer.clear();
    expect(dropped.length + sent.length).toBe(25);
    const afterClear = sent.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(sent.length).toBe(afterClear);
    expect(sent[sent.length - 1] - start).toBeLessThan(320);
    pacer.enqueue(frame);
    await new Promise((r) => setTimeout(r, 150));
    expect(idle).toBe(true);
    pacer.close();
  });
});
