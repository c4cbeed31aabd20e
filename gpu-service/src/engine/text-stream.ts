/**
 * Token ids → streamed text. Decodes the whole output so far and emits only
 * the new part, holding back (a) a trailing U+FFFD, which means a multi-byte
 * character is still incomplete, and (b) any tail that could be the start of
 * a stop sequence. When a stop sequence appears, the text before it is the
 * last emitted and the stream is finished; the stop string itself never leaks.
 */
export class TextStream {
  private ids: number[] = [];
  private emitted = 0;
  stopped = false;

  constructor(
    private readonly decode: (ids: number[]) => string,
    private readonly stops: readonly string[] = [],
  ) {}

  /** Adds tokens; returns the text that is now safe to emit. */
  push(ids: readonly number[]): string {
    if (this.stopped) return "";
    this.ids.push(...ids);
    const text = this.decode(this.ids);
    let end = text.length;
    for (const stop of this.stops) {
      if (stop === "") continue;
      const at = text.indexOf(stop, Math.max(0, this.emitted - stop.length + 1));
      if (at >= 0 && at < end) {
        end = at;
        this.stopped = true;
      }
    }
    if (!this.stopped) {
      if (text.endsWith("\uFFFD")) end = Math.min(end, text.length - 1);
      // hold back a tail that is a prefix of some stop sequence
      for (const stop of this.stops) {
        for (let k = Math.min(stop.length - 1, text.length); k > 0; k--) {
          if (text.endsWith(stop.slice(0, k))) {
            end = Math.min(end, text.length - k);
            break;
          }
        }
      }
    }
    if (end <= this.emitted) return "";
    const out = text.slice(this.emitted, end);
    this.emitted = end;
    return out;
  }

  /** The rest of the text at the end of generation (no stop sequence can complete any more). */
  flush(): string {
    if (this.stopped) return "";
    const text = this.decode(this.ids);
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    return out;
  }
}
