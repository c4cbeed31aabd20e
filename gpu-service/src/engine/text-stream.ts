/**
 * Token ids → streamed text, holding back (a) a trailing U+FFFD, which means a
 * multi-byte character is still incomplete, and (b) any tail that could be the
 * start of a stop sequence. When a stop sequence appears, the text before it is
 * the last emitted and the stream is finished; the stop string itself never leaks.
 *
 * The text grows incrementally, as vLLM's detokenizer does: each push decodes a
 * window of the last tokens, once without the new ones and once with them, and
 * appends the difference, so a token costs the window's length, not the whole
 * output's (decoding the whole output at every token made a long answer's text
 * cost grow with the square of its length). The window starts where the previous
 * new tokens began, and at least CONTEXT tokens back, so what a tokenizer does
 * across token boundaries (the space it puts between words, joining a "##" piece,
 * a clean-up rule, fusing byte tokens into a character) is inside it; it reaches
 * back over tokens that decode to nothing (special tokens are skipped), and it
 * moves on only once the new text does not end in U+FFFD (a character's bytes are
 * never split between two windows). Each delta equals what decoding the whole
 * output at every token gave (test/node/engine-io/text-stream.test.ts, on random
 * ids of WordPiece and byte-fallback tokenizers); should a window's text ever not
 * extend its prefix, the whole output is decoded.
 */
/** Tokens of context the window keeps before the new ones, at least. */
const CONTEXT = 4;

export class TextStream {
  private ids: number[] = [];
  /** The output's text so far, from ids [0, readOffset). */
  private text = "";
  /** ids [prefixOffset, readOffset) are the window's prefix: the tokens before the ones not yet in `text`. */
  private prefixOffset = 0;
  private readOffset = 0;
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
    const text = this.current(false);
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
    const text = this.current(true);
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    return out;
  }

  /**
   * The whole output's text: `text` and the window's new part, which joins `text` once it does not end
   * in U+FFFD (at the end, `last`, whatever it ends in).
   */
  private current(last: boolean): string {
    if (this.readOffset === this.ids.length) return this.text;
    // at least CONTEXT tokens before the new ones: a clean-up rule may span a few tokens (" do not" -> " don't")
    let from = Math.min(this.prefixOffset, Math.max(0, this.readOffset - CONTEXT));
    let prefix = this.decode(this.ids.slice(from, this.readOffset));
    // a prefix that decodes to nothing (special tokens) would make the new tokens the text's first
    while (prefix === "" && from > 0) {
      from = Math.max(0, from - 4);
      prefix = this.decode(this.ids.slice(from, this.readOffset));
    }
    const whole = this.decode(this.ids.slice(from));
    if (!whole.startsWith(prefix)) {
      // the new tokens changed the window's earlier text: decode everything (never seen with HF decoders)
      this.text = this.decode(this.ids);
    } else {
      const pending = whole.slice(prefix.length);
      if (!last && (pending === "" || whole.endsWith("\uFFFD"))) return this.text + pending;
      this.text += pending;
    }
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return this.text;
  }
}
