// One prefix watch over the gateway's streaming POST /v3/watch, kept alive across stream ends,
// etcd restarts and endpoint changes.
//
// Resume rule: after delivering a response, the watch resumes from the last delivered event's
// mod_revision + 1 (not the header revision: a catch-up response may stop short of the header
// revision, and etcd never splits one revision across responses). So a reconnect neither loses
// nor repeats events. Reconnects back off 100 ms, doubling to 5 s, reset once etcd accepts a watch.
// A compacted start revision ends the watch with onCompacted(); the consumer re-lists.

import type { ClientRequest } from 'node:http';

import type { KeyValue, Watch, WatchEvent, WatchHandlers } from '../subnet/kv.js';
import { decodeBytes, int64Number, leaseIdOf, prefixRange, type WireHeader, type WireKeyValue } from './codec.js';
import { EtcdWatchError } from './errors.js';
import { JsonObjectSplitter } from './json-stream.js';
import { isAuthRetryableMessage, type EtcdTransport } from './transport.js';
import type { ResetMark } from '../subnet/registry-reset.js';

/** The store's reset detection: a mark taken before each (re)connection, and every response header. */
export interface HeaderObserver {
  mark(): ResetMark;
  /** May end this watch (endAsCompacted) when the header shows a reset. */
  observe(header: WireHeader | undefined, sent: ResetMark): void;
}

const NO_OBSERVER: HeaderObserver = {
  mark: () => ({ epoch: 0, highestRevision: 0 }),
  observe: () => undefined,
};

const INITIAL_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

/** Per-response cache of lease expiries: one TimeToLive per distinct lease. */
export type ExpiryCache = Map<string, Promise<number | null>>;
export type ExpiryResolver = (leaseId: string, cache: ExpiryCache) => Promise<number | null>;

interface WireEvent {
  type?: 'PUT' | 'DELETE';
  kv?: WireKeyValue;
}

interface WireWatchResult {
  header?: WireHeader;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: WireEvent[];
}

interface WireWatchMessage {
  result?: WireWatchResult;
  error?: { message?: string; grpc_code?: number; http_code?: number };
}

export class PrefixWatch implements Watch {
  private nextRevision: number;
  private closed = false;
  private retryDelayMs = INITIAL_RETRY_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  private request: ClientRequest | null = null;
  /** Bumped on every (re)connection; work belonging to an older connection is dropped. */
  private connection = 0;
  /** Messages are handled one at a time, in arrival order, even though handling awaits RPCs. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly transport: EtcdTransport,
    private readonly resolveExpiry: ExpiryResolver,
    private readonly prefix: string,
    fromRevision: number,
    private readonly handlers: WatchHandlers,
    private readonly onClosed: (watch: PrefixWatch) => void,
    private readonly headers: HeaderObserver = NO_OBSERVER,
  ) {
    this.nextRevision = fromRevision;
  }

  start(): void {
    void this.connect();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection++;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.request?.destroy();
    this.request = null;
    this.onClosed(this);
  }

  /** The store was reset: end, and let the consumer list again (as after a compaction). */
  endAsCompacted(): void {
    if (this.closed) return;
    this.close();
    this.handlers.onCompacted();
  }

  private async connect(): Promise<void> {
    this.retryTimer = null;
    if (this.closed) return;
    const connection = ++this.connection;
    const sent = this.headers.mark();
    const range = prefixRange(this.prefix);
    const body = {
      create_request: { key: range.key, range_end: range.rangeEnd, start_revision: String(this.nextRevision) },
    };
    let opened;
    try {
      opened = await this.transport.openStream('/v3/watch', body);
    } catch (err) {
      this.fail(connection, err as Error);
      return;
    }
    if (connection !== this.connection) {
      opened.request.destroy();
      return;
    }
    this.request = opened.request;
    const splitter = new JsonObjectSplitter();
    let streamError: Error | null = null;
    opened.response.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = splitter.push(chunk);
      } catch (err) {
        this.fail(connection, err as Error);
        return;
      }
      for (const message of messages) {
        this.queue = this.queue
          .then(() => this.handle(connection, opened.token, message as WireWatchMessage, sent))
          .catch((err: Error) => this.fail(connection, err));
      }
    });
    opened.response.on('error', (err) => {
      streamError = err;
    });
    opened.response.once('close', () => {
      // After the messages already received have been handled.
      this.queue = this.queue.then(() => {
        const reason = streamError === null ? 'ended' : `broke: ${streamError.message}`;
        this.fail(connection, new Error(`stream from ${opened.endpoint.label} ${reason}`));
      });
    });
  }

  /** Drops the connection and schedules a reconnect, unless it is already gone. */
  private fail(connection: number, err: Error): void {
    if (this.closed || connection !== this.connection) return;
    this.connection++;
    this.request?.destroy();
    this.request = null;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_MS);
    this.report(
      new Error(
        `etcd watch on ${JSON.stringify(this.prefix)} from revision ${this.nextRevision}: ${err.message}; ` +
          `retrying in ${delay} ms`,
      ),
    );
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private async handle(connection: number, token: string, message: WireWatchMessage, sent: ResetMark): Promise<void> {
    if (connection !== this.connection) return;
    if (message.error !== undefined) {
      const text = message.error.message ?? JSON.stringify(message.error);
      if (isAuthRetryableMessage(text)) this.transport.invalidateToken(token);
      throw new EtcdWatchError(`etcd: ${text}`);
    }
    const result = message.result;
    if (result === undefined) return;
    // A reset seen here (a re-created watch on an etcd wiped meanwhile) ends this watch.
    this.headers.observe(result.header, sent);
    if (this.closed || connection !== this.connection) return;
    const compactRevision = int64Number(result.compact_revision);
    if (compactRevision > 0 || (result.canceled === true && /compact/i.test(result.cancel_reason ?? ''))) {
      this.close();
      this.handlers.onCompacted();
      return;
    }
    if (result.canceled === true) {
      // A stale token (etcd restarted, or auth toggled) cancels the watch at creation; the
      // reconnect then logs in again.
      if (isAuthRetryableMessage(result.cancel_reason ?? '')) this.transport.invalidateToken(token);
      throw new EtcdWatchError(`watch canceled by etcd: ${result.cancel_reason ?? 'no reason given'}`);
    }
    if (result.created === true) {
      this.retryDelayMs = INITIAL_RETRY_MS;
    }
    const wireEvents = result.events ?? [];
    if (wireEvents.length === 0) return;
    const cache: ExpiryCache = new Map();
    const events = await Promise.all(wireEvents.map((event) => this.toWatchEvent(event, cache)));
    if (connection !== this.connection) return;
    const lastRevision =
      events[events.length - 1]!.type === 'put'
        ? (events[events.length - 1] as { kv: KeyValue }).kv.modRevision
        : (events[events.length - 1] as { modRevision: number }).modRevision;
    this.nextRevision = Math.max(this.nextRevision, lastRevision + 1);
    try {
      this.handlers.onEvents(events, int64Number(result.header?.revision));
    } catch (err) {
      this.report(new Error(`etcd watch on ${JSON.stringify(this.prefix)}: onEvents threw: ${(err as Error).message}`));
    }
  }

  private async toWatchEvent(event: WireEvent, cache: ExpiryCache): Promise<WatchEvent> {
    const kv = event.kv ?? {};
    const key = decodeBytes(kv.key);
    const modRevision = int64Number(kv.mod_revision);
    if (event.type === 'DELETE') return { type: 'delete', key, modRevision };
    const expiresAt = await this.resolveExpiry(leaseIdOf(kv.lease), cache);
    return { type: 'put', kv: { key, value: decodeBytes(kv.value), modRevision, expiresAt } };
  }

  private report(err: Error): void {
    try {
      this.handlers.onError?.(err);
    } catch {
      // a failing error handler must not break the watch
    }
  }
}
