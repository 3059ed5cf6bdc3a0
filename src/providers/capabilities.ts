/**
 * What a provider says of itself, beside its code: where its work runs and whether its results stream.
 * Operators read it at `GET /v1/capabilities` (a bank's reviewer asks which stage sends audio or text off
 * the machine); composites (a TTS per language, a remote stage with an embedded fallback) report the union.
 */

/** `cpu`/`gpu`: inside this process (onnxruntime, PocketSphinx, llama.cpp, eSpeak); `server`: over the network. */
export type Placement = 'cpu' | 'gpu' | 'server';

export interface ProviderCapabilities {
  /** Where the stage's work runs; more than one for a composite. */
  runsOn: readonly Placement[];
  /** Results arrive while the input still does: ASR partials, LLM tokens, TTS audio before the text is spoken whole. */
  streaming: boolean;
}

/** The capabilities of a provider made of others (each part's placements, streaming only if every part streams). */
export function unionCapabilities(parts: readonly { capabilities: ProviderCapabilities }[]): ProviderCapabilities {
  return {
    runsOn: [...new Set(parts.flatMap((p) => p.capabilities.runsOn))],
    streaming: parts.every((p) => p.capabilities.streaming),
  };
}
