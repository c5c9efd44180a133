/**
 * Deliberately simple linear longest-prefix match, the oracle the trie is tested against.
 * Tests only: O(routes) per lookup.
 */

import type { Route } from '../../src/routing-table/snapshot.js';

/** BLOCK_SIZE[len]: how many addresses a /len covers, 2^(32-len). A table because `2 **` is a slow pow() call. */
const BLOCK_SIZE: readonly number[] = Array.from({ length: 33 }, (_, len) => 2 ** (32 - len));

/**
 * Index of the route with the longest prefix containing addr, or -1. Among equal prefix lengths the
 * later route wins, so on a list with duplicate prefixes this gives the "last one wins" answer.
 */
export function referenceLookup(routes: readonly Route[], addr: number): number {
  const a = addr >>> 0;
  let best = -1;
  let bestLen = -1;
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i]!;
    // Plain arithmetic rather than bit masks, so it shares no tricks with the trie or maskOf:
    // prefix/len covers the 2^(32-len) addresses starting at prefix.
    const inside = a >= r.prefix && a - r.prefix < BLOCK_SIZE[r.prefixLen]!;
    if (inside && r.prefixLen >= bestLen) {
      best = i;
      bestLen = r.prefixLen;
    }
  }
  return best;
}
