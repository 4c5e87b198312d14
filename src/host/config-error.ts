/** A setting of `dabba serve` or `dabba status` that cannot work: the CLI prints its message and exits with 2. */
export class ServeConfigError extends RangeError {}
