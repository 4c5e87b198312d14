/** Collects callback values; until() resolves with the first (past or future) one that matches. */
export class Inbox<T> {
  readonly items: T[] = [];
  private waiters: { matches: (item: T) => boolean; resolve: (item: T) => void }[] = [];

  /** Bounds every wait, so a regression fails instead of hanging. */
  constructor(private readonly timeoutMs: number) {}

  readonly push = (item: T): void => {
    this.items.push(item);
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.matches(item)) return true;
      waiter.resolve(item);
      return false;
    });
  };

  until(matches: (item: T) => boolean, what: string): Promise<T> {
    const seen = this.items.find(matches);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.items)}`)), this.timeoutMs);
      this.waiters.push({ matches, resolve: (item) => (clearTimeout(timer), resolve(item)) });
    });
  }

  /** Like until(), but only for items pushed from now on. */
  next(matches: (item: T) => boolean, what: string): Promise<T> {
    const seen = this.items.length;
    return this.until((item) => this.items.indexOf(item, seen) >= seen && matches(item), what);
  }
}
