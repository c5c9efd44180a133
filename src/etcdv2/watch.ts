// One prefix watch over etcd v2 long polls: GET <dir>?wait=true&recursive=true&waitIndex=N, as
// flanneld's v2 registry watches (one request per change; etcd answers from its history of the
// last 1000 changes, or waits for the next one).
//
// Resume rule: after a change with modifiedIndex m (under the prefix or not) the next poll asks for
// waitIndex m + 1, so a reconnect neither loses nor repeats changes. etcd's 401 "The event in
// requested index is outdated and cleared" (our waitIndex fell out of that history) ends the watch
// with onCompacted(): the consumer lists again, as flanneld's leasesWatchReset does. So does the
// removal of a directory holding the prefix (one v2 event for many keys). Failed polls are retried
// 100 ms doubling to 5 s, reset once etcd accepts a poll.

import type { ClientRequest } from 'node:http';

import type { Watch, WatchEvent, WatchHandlers } from '../subnet/kv.js';
import { V2_EVENT_INDEX_CLEARED, isV2Error } from './errors.js';
import { REMOVING_ACTIONS, isAncestorOrSelf, toKeyValue, type V2Response } from './node.js';
import { readReply } from '../etcd/http-exchange.js';
import type { EtcdV2Transport } from './transport.js';

const INITIAL_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

export class V2PrefixWatch implements Watch {
  private nextIndex: number;
  private closed = false;
  private retryDelayMs = INITIAL_RETRY_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  private request: ClientRequest | null = null;

  constructor(
    private readonly transport: EtcdV2Transport,
    /** The directory polled (see directoryOf). */
    private readonly dir: string,
    /** Only changes of keys starting with this are delivered. */
    private readonly prefix: string,
    fromIndex: number,
    private readonly handlers: WatchHandlers,
    private readonly onClosed: (watch: V2PrefixWatch) => void,
  ) {
    this.nextIndex = fromIndex;
  }

  start(): void {
    void this.poll();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.request?.destroy();
    this.request = null;
    this.onClosed(this);
  }

  private async poll(): Promise<void> {
    this.retryTimer = null;
    while (!this.closed) {
      let change: V2Response | null;
      try {
        change = await this.longPoll();
      } catch (err) {
        if (this.closed) return;
        if (isV2Error(err, V2_EVENT_INDEX_CLEARED)) {
          this.close();
          this.handlers.onCompacted();
          return;
        }
        this.retryLater(err as Error);
        return;
      }
      if (this.closed) return;
      if (change === null) {
        this.retryLater(new Error('etcd ended the long poll without a change'));
        return;
      }
      if (!this.deliver(change)) return;
    }
  }

  /** One long poll: the change etcd answered with, or null when it ended the poll without one. */
  private async longPoll(): Promise<V2Response | null> {
    const opened = await this.transport.openWatch(this.dir, {
      wait: 'true',
      recursive: 'true',
      waitIndex: String(this.nextIndex),
    });
    if (this.closed) {
      opened.request.destroy();
      return null;
    }
    this.request = opened.request;
    this.retryDelayMs = INITIAL_RETRY_MS; // etcd accepted the watch
    try {
      const reply = await readReply(opened.response);
      if (reply.body.trim() === '') return null;
      try {
        return JSON.parse(reply.body) as V2Response;
      } catch {
        throw new Error(`reply from ${opened.endpoint.label} is not JSON: ${reply.body.slice(0, 200)}`);
      }
    } finally {
      opened.request.destroy();
      this.request = null;
    }
  }

  /** Hands one change to the consumer; false when the watch must not poll on (closed, or retry scheduled). */
  private deliver(change: V2Response): boolean {
    const node = change.node ?? {};
    const key = node.key ?? '';
    const index = node.modifiedIndex ?? 0;
    if (!(index >= this.nextIndex)) {
      this.retryLater(new Error(`change without a usable modifiedIndex: ${JSON.stringify(change).slice(0, 200)}`));
      return false;
    }
    this.nextIndex = index + 1;
    const removing = REMOVING_ACTIONS.has(change.action ?? '');
    if (node.dir === true) {
      // A removed directory that held our keys: v2 reports it as one change, not one per key.
      if (removing && (isAncestorOrSelf(key, this.prefix.replace(/\/$/, '')) || key.startsWith(this.prefix))) {
        this.close();
        this.handlers.onCompacted();
        return false;
      }
      return true;
    }
    if (!key.startsWith(this.prefix)) return true;
    const event: WatchEvent = removing
      ? { type: 'delete', key, modRevision: index }
      : { type: 'put', kv: toKeyValue(node) };
    try {
      this.handlers.onEvents([event], index);
    } catch (err) {
      this.report(
        new Error(`etcd v2 watch on ${JSON.stringify(this.prefix)}: onEvents threw: ${(err as Error).message}`),
      );
    }
    return !this.closed;
  }

  private retryLater(err: Error): void {
    if (this.closed) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_MS);
    this.report(
      new Error(
        `etcd v2 watch on ${JSON.stringify(this.prefix)} from index ${this.nextIndex}: ${err.message}; retrying in ${delay} ms`,
      ),
    );
    this.retryTimer = setTimeout(() => void this.poll(), delay);
  }

  private report(err: Error): void {
    try {
      this.handlers.onError?.(err);
    } catch {
      // a failing error handler must not break the watch
    }
  }
}
