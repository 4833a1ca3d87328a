/** Base class of every error templora throws on purpose. */
export class TemploraError extends Error {
  /** Same as `Error`'s; the name is the subclass's. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
