// Secret values known to this run; every log line and recorded command passes through mask().

const known = new Set<string>();

/** Registers a value that must never appear in a log, a recorded argv or an error message. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) known.add(value);
}

export function mask(text: string): string {
  let out = text;
  // Longest first, so a secret that contains another is masked whole.
  for (const s of [...known].sort((a, b) => b.length - a.length)) out = out.split(s).join('***');
  return out;
}

export function clearSecretsForTest(): void {
  known.clear();
}

/** True when the text holds any registered secret value. */
export function containsSecret(text: string): boolean {
  for (const s of known) if (text.includes(s)) return true;
  return false;
}
