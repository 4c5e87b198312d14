/**
 * npm packages a peer needs that an installed dabba may lack. A peer's client library (the `redis`
 * client) is a devDependency, since the engine never uses it, so it is loaded with import() when that
 * peer runs, and its absence becomes a MissingPackageError naming the command that installs it.
 */

export interface OptionalPackage {
  readonly name: string;
  /** The version package.json pins in devDependencies (test/package.test.ts checks they agree). */
  readonly version: string;
}

/** A package a peer needs is not installed. */
export class MissingPackageError extends Error {
  readonly packageName: string;
  readonly installCommand: string;

  constructor(optional: OptionalPackage, cause: unknown) {
    const installCommand = `npm install ${optional.name}@${optional.version}`;
    super(`the npm package ${optional.name} is not installed; install it with: ${installCommand}`, { cause });
    this.name = 'MissingPackageError';
    this.packageName = optional.name;
    this.installCommand = installCommand;
  }
}

/**
 * `load()` (an import() of `optional`), or a MissingPackageError when that package itself cannot
 * be found. Any other failure, a missing package of its own among them, is rethrown as it is.
 */
export async function importOptional<T>(optional: OptionalPackage, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    const notFound = (error as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND';
    if (notFound && error instanceof Error && error.message.includes(`'${optional.name}'`)) throw new MissingPackageError(optional, error);
    throw error;
  }
}
