// Splits a byte stream of concatenated top-level JSON objects (the gateway's server-streaming
// framing: one object per message, newline-separated in practice) into parsed values. It does
// not rely on the newlines: it tracks brace depth outside of strings, so any whitespace or none
// between objects works.
import { EtcdProtocolError } from './errors.js';

export class JsonObjectSplitter {
  private buffered = '';
  /** Scan position inside buffered, and the lexer state at that position. */
  private scanned = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;
  private readonly decoder = new TextDecoder('utf-8');

  /** Feeds a chunk; returns every object completed by it, in order. Throws on malformed JSON. */
  push(chunk: Uint8Array): unknown[] {
    this.buffered += this.decoder.decode(chunk, { stream: true });
    const out: unknown[] = [];
    let start = 0;
    for (let i = this.scanned; i < this.buffered.length; i++) {
      const c = this.buffered.charCodeAt(i);
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === 0x5c /* \ */) this.escaped = true;
        else if (c === 0x22 /* " */) this.inString = false;
        continue;
      }
      if (c === 0x22) {
        this.inString = true;
      } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        if (this.depth === 0) start = i;
        this.depth++;
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        this.depth--;
        if (this.depth < 0) throw new EtcdProtocolError('etcd stream: unbalanced JSON');
        if (this.depth === 0) {
          out.push(JSON.parse(this.buffered.slice(start, i + 1)));
          start = i + 1;
        }
      } else if (this.depth === 0 && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        throw new EtcdProtocolError(
          `etcd stream: unexpected character ${JSON.stringify(String.fromCharCode(c))} between messages`,
        );
      }
    }
    // Keep only the unfinished object (or nothing) for the next chunk.
    if (this.depth === 0) {
      this.buffered = '';
      this.scanned = 0;
    } else {
      this.buffered = this.buffered.slice(start);
      this.scanned = this.buffered.length;
    }
    return out;
  }
}
