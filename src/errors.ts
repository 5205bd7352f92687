// Errors a user can act on. The CLI prints `message` alone (no stack) and exits with `exitCode`;
// anything else is a bug and is printed with its stack.

export class UserError extends Error {
  readonly exitCode: number = 2;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A model folder, weights file, graph or tokenizer that cannot be used. Names the file. */
export class ModelLoadError extends UserError {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

/** Bad command-line or API input (an intervention spec, a sampling parameter, ...). */
export class InvalidInputError extends UserError {
  constructor(
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** A configured limit would be exceeded (the live interventions cap, say). */
export class LimitExceededError extends UserError {
  constructor(
    message: string,
    readonly limit: number,
  ) {
    super(message);
  }
}

/** The change conflicts with where the thing is managed (an intervention declared in a file). */
export class ManagedElsewhereError extends UserError {
  constructor(
    message: string,
    /** Where it is managed: the interventions file's path. */
    readonly managedBy: string,
  ) {
    super(message);
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
