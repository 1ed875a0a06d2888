// Errors a user can act on: what went wrong and the fix, printed once at the top level.

/** A failure caused by input or environment, with the fix to apply. Printed without a stack. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly fix?: string,
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** A command that exited non-zero; carries the argv (already masked) and the tail of stderr. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`command failed (exit ${code ?? 'signal'}): ${argv.join(' ')}\n${tail(stderr || stdout, 20)}`);
    this.name = 'CommandError';
  }
}

export function tail(text: string, lines: number): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

/** One line (or a few) for the terminal: message, detail, then the fix. */
export function describeError(err: unknown): string {
  if (err instanceof UserError) {
    return [`error: ${err.message}`, err.detail ? err.detail : '', err.fix ? `fix: ${err.fix}` : '']
      .filter(Boolean)
      .join('\n');
  }
  if (err instanceof Error) return `error: ${err.message}`;
  return `error: ${String(err)}`;
}
