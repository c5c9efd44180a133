// A MemoryKvStore that behaves like EtcdKvStore on list(prefix, { expiries: false }): the listed
// entries carry no expiresAt at all. It records which kind of listing each call asked for, so a
// test can check that a caller does without expiries, and still works without them.

import type { ListedKey, ListOptions, Listing } from '../../src/subnet/kv.js';
import { MemoryKvStore } from './memory-kv.js';

export class BareListingStore extends MemoryKvStore {
  /** One entry per list() call: 'bare' (expiries: false) or 'full'. */
  readonly listings: ('bare' | 'full')[] = [];

  override list(prefix: string): Promise<Listing>;
  override list(prefix: string, options: ListOptions): Promise<Listing<ListedKey>>;
  override async list(prefix: string, options?: ListOptions): Promise<Listing<ListedKey>> {
    const listing = await super.list(prefix);
    if (options?.expiries !== false) {
      this.listings.push('full');
      return listing;
    }
    this.listings.push('bare');
    return {
      revision: listing.revision,
      kvs: listing.kvs.map(({ key, value, modRevision }) => ({ key, value, modRevision })),
    };
  }
}
