/**
 * Domain-independent dialogue words and lines, per language: yes/no, cancel, corrections, and what the
 * engine itself says (handoff, "did you want to end the call?"). A rules file may override any of them.
 */
import { fold } from './values.js';

export type LangList = Record<string, string[]>;
export type LangText = Record<string, string>;

export interface Lexicon {
  yes: LangList;
  no: LangList;
  cancel: LangList;
  correction: LangList;
}

/** Commonest first: a recogniser's open grammar takes only the first few yes and no words as sentences. */
export const DEFAULT_LEXICON: Lexicon = {
  yes: {
    en: ['yes', 'yeah', 'yep', 'sure', 'correct', "that's right", 'right', 'ok', 'okay', 'go ahead', 'please do', 'absolutely', 'exactly', 'confirm'],
    fr: ['oui', 'ouais', "d'accord", 'exact', 'exactement', "c'est ça", 'bien sûr', 'parfait', 'tout à fait', 'je confirme', 'allez-y'],
    de: ['ja', 'genau', 'richtig', 'stimmt', 'gerne', 'okay', 'jawohl', 'einverstanden', 'korrekt', 'bitte schön'],
    es: ['sí', 'vale', 'claro', 'correcto', 'exacto', 'de acuerdo', 'eso es', 'perfecto', 'confirmo', 'adelante'],
    it: ['sì', 'certo', 'esatto', 'va bene', 'giusto', "d'accordo", 'perfetto', 'confermo', 'corretto', 'proceda'],
  },
  no: {
    en: ['no', 'nope', 'wrong', 'incorrect', 'not', "don't", 'do not'],
    fr: ['non', 'faux', 'incorrect', 'pas'],
    de: ['nein', 'nee', 'falsch', 'nicht', 'keine'],
    es: ['no', 'incorrecto', 'equivocado'],
    it: ['no', 'sbagliato', 'non'],
  },
  cancel: {
    en: ['cancel', 'cancel that', 'start over', 'forget it', 'never mind'],
    fr: ['annuler', 'annulez', 'recommencer', 'laissez tomber', 'oubliez ça'],
    de: ['abbrechen', 'stornieren', 'von vorne', 'vergessen sie es', 'neu anfangen'],
    es: ['cancelar', 'cancela', 'cancele', 'empezar de nuevo', 'olvídalo', 'déjalo'],
    it: ['annulla', 'annullare', 'ricominciare', 'lascia perdere', 'lasci perdere'],
  },
  correction: {
    en: ['actually', 'make it', 'change', 'instead', 'i meant', 'rather'],
    fr: ['plutôt', 'en fait', 'changez', 'finalement', 'mettez'],
    de: ['eigentlich', 'lieber', 'stattdessen', 'doch', 'ändern'],
    es: ['mejor', 'en realidad', 'cambia', 'cambie', 'mejor dicho', 'pon', 'ponga'],
    it: ['anzi', 'invece', 'cambia', 'cambi', 'meglio', 'metta'],
  },
};

export type MessageKey =
  | 'cancelled'
  | 'nothingToCancel'
  | 'whatToChange'
  | 'yesOrNo'
  | 'handoff'
  | 'confirmEnd'
  | 'confirmTransfer'
  | 'notNow'
  | 'anythingElse'
  | 'offerPerson'
  | 'puttingThrough'
  | 'carryOn'
  | 'askBack'
  | 'misheard';

export const DEFAULT_MESSAGES: Record<MessageKey, LangText> = {
  cancelled: {
    en: 'Okay, I have cancelled that. Is there anything else?',
    fr: "D'accord, j'ai annulé. Puis-je faire autre chose ?",
    de: 'In Ordnung, ich habe das abgebrochen. Kann ich sonst noch helfen?',
    es: 'De acuerdo, lo he cancelado. ¿Algo más?',
    it: "D'accordo, ho annullato. Posso fare altro?",
  },
  nothingToCancel: {
    en: 'There is nothing to cancel. How can I help?',
    fr: "Il n'y a rien à annuler. Comment puis-je vous aider ?",
    de: 'Es gibt nichts abzubrechen. Wie kann ich helfen?',
    es: 'No hay nada que cancelar. ¿En qué puedo ayudarle?',
    it: "Non c'è niente da annullare. Come posso aiutarla?",
  },
  whatToChange: {
    en: 'Okay. What would you like to change?',
    fr: "D'accord. Que voulez-vous changer ?",
    de: 'In Ordnung. Was möchten Sie ändern?',
    es: 'De acuerdo. ¿Qué quiere cambiar?',
    it: "D'accordo. Cosa vuole cambiare?",
  },
  yesOrNo: {
    en: 'Please answer yes or no.',
    fr: 'Répondez par oui ou par non, s’il vous plaît.',
    de: 'Bitte antworten Sie mit ja oder nein.',
    es: 'Por favor, responda sí o no.',
    it: 'Risponda sì o no, per favore.',
  },
  handoff: {
    en: 'I am sorry, I am having trouble understanding. Let me put you through to a colleague.',
    fr: "Désolé, j'ai du mal à vous comprendre. Je vous passe un collègue.",
    de: 'Entschuldigung, ich verstehe Sie leider nicht. Ich verbinde Sie mit einem Kollegen.',
    es: 'Lo siento, no consigo entenderle. Le paso con un compañero.',
    it: 'Mi scusi, non riesco a capire. La passo a un collega.',
  },
  confirmEnd: {
    en: 'Did you want to end the call?',
    fr: "Voulez-vous terminer l'appel ?",
    de: 'Möchten Sie das Gespräch beenden?',
    es: '¿Quiere terminar la llamada?',
    it: 'Vuole terminare la chiamata?',
  },
  confirmTransfer: {
    en: 'Did you want to speak to a colleague?',
    fr: 'Voulez-vous parler à un collègue ?',
    de: 'Möchten Sie mit einem Kollegen sprechen?',
    es: '¿Quiere hablar con un compañero?',
    it: 'Vuole parlare con un collega?',
  },
  notNow: {
    en: 'Okay, I will not do that.',
    fr: "D'accord, je ne le fais pas.",
    de: 'In Ordnung, dann nicht.',
    es: 'De acuerdo, no lo haré.',
    it: "D'accordo, non lo faccio.",
  },
  offerPerson: {
    en: 'Sorry, I did not understand that. Shall I put you through to a person?',
    fr: "Désolé, je n'ai pas compris. Voulez-vous que je vous passe une personne ?",
    de: 'Entschuldigung, das habe ich nicht verstanden. Soll ich Sie mit einer Person verbinden?',
    es: 'Lo siento, no le he entendido. ¿Quiere que le pase con una persona?',
    it: 'Mi scusi, non ho capito. Vuole che la passi a una persona?',
  },
  puttingThrough: {
    en: 'Of course. I am putting you through to a person now.',
    fr: 'Bien sûr. Je vous passe une personne.',
    de: 'Gern. Ich verbinde Sie jetzt mit einer Person.',
    es: 'Por supuesto. Le paso ahora con una persona.',
    it: 'Certo. La passo ora a una persona.',
  },
  carryOn: {
    en: 'All right, let us carry on. How can I help?',
    fr: "D'accord, continuons. Comment puis-je vous aider ?",
    de: 'In Ordnung, machen wir weiter. Wie kann ich helfen?',
    es: 'De acuerdo, sigamos. ¿En qué puedo ayudarle?',
    it: "D'accordo, andiamo avanti. Come posso aiutarla?",
  },
  askBack: {
    en: 'Did you say: {text}?',
    fr: 'Avez-vous dit : {text} ?',
    de: 'Haben Sie gesagt: {text}?',
    es: '¿Ha dicho: {text}?',
    it: 'Ha detto: {text}?',
  },
  misheard: {
    en: 'Sorry, I misheard.',
    fr: "Pardon, j'ai mal compris.",
    de: 'Entschuldigung, da habe ich mich verhört.',
    es: 'Perdón, le he entendido mal.',
    it: 'Mi scusi, ho capito male.',
  },
  anythingElse: {
    en: 'How else can I help?',
    fr: 'Que puis-je faire d’autre pour vous ?',
    de: 'Wie kann ich sonst helfen?',
    es: '¿En qué más puedo ayudarle?',
    it: 'In cos’altro posso aiutarla?',
  },
};

/** True when one of the phrases occurs in the words (as whole words, in order). */
export function hasPhrase(ws: readonly string[], phrases: readonly string[] | undefined): boolean {
  if (!phrases) return false;
  for (const p of phrases) {
    const seq = fold(p).split(/[^\p{L}\p{N}]+/u).filter(Boolean);
    for (let i = 0; i + seq.length <= ws.length; i++) if (seq.every((s, k) => ws[i + k] === s)) return true;
  }
  return false;
}

/** yes / no / undefined for an answer to a yes-no question; "no" wins over a "yes" in the same breath ("no, not right"). */
export function yesNo(ws: readonly string[], language: string, lexicon: Lexicon): 'yes' | 'no' | undefined {
  if (hasPhrase(ws, lexicon.no[language])) return 'no';
  if (hasPhrase(ws, lexicon.yes[language])) return 'yes';
  // The caller may answer in another of the agent's languages.
  for (const lang of Object.keys(lexicon.yes)) {
    if (lang === language) continue;
    if (hasPhrase(ws, lexicon.no[lang])) return 'no';
    if (hasPhrase(ws, lexicon.yes[lang])) return 'yes';
  }
  return undefined;
}
