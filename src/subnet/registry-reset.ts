// Noticing that the registry is not the one whose history we followed: etcd wiped and restarted
// empty, restored from an older snapshot, or a new cluster at the same address; the file registry
// deleted or replaced by an older copy. Watches would otherwise wait, silently, for revisions the
// new registry may take days to reach, and our lease would be gone without a word.
//
// A store feeds what each reply tells of the registry (its cluster ID where it has one, and its
// revision) into a ResetDetector, with the mark() it took before sending the request. A reply whose
// revision is lower than the highest seen before the request was sent, or another cluster ID, is a
// reset: the listeners are told once, with the reason in words. Comparing with what was known at
// sending time, not at arrival, keeps replies that cross on different connections (a listing served
// just before a write whose watch event arrived first) from passing for a reset; and a reply to a
// request sent before the last reset was seen belongs to the new registry already, so it tells
// nothing. (A member ID change alone is not a reset: in a cluster of several members it is a
// failover to another member of the same registry.)

export type ResetListener = (reason: string) => void;

/** What the detector knew when a request was sent: see ResetDetector.mark(). */
export interface ResetMark {
  readonly epoch: number;
  readonly highestRevision: number;
}

export class ResetDetector {
  private clusterId: string | null = null;
  private highestRevision = 0;
  /** Resets seen so far. */
  private epoch = 0;
  private readonly listeners = new Set<ResetListener>();

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: ResetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Taken just before sending a request; handed back to observe() with its reply. */
  mark(): ResetMark {
    return { epoch: this.epoch, highestRevision: this.highestRevision };
  }

  /**
   * What one reply said: the registry's revision (0: not given) and cluster ID (null: none), for a
   * request sent at `sent` (default: now). Returns true, after telling the listeners, when it
   * shows a reset.
   */
  observe(revision: number, clusterId: string | null = null, sent: ResetMark = this.mark()): boolean {
    let reason: string | null = null;
    if (sent.epoch === this.epoch) {
      if (clusterId !== null && this.clusterId !== null && clusterId !== this.clusterId) {
        reason = `its cluster ID changed from ${this.clusterId} to ${clusterId}`;
      } else if (revision > 0 && revision < sent.highestRevision) {
        reason = `its revision went back from ${this.highestRevision} to ${revision}`;
      }
    }
    if (clusterId !== null) this.clusterId = clusterId;
    if (reason === null) {
      if (revision > this.highestRevision) this.highestRevision = revision;
      return false;
    }
    this.highestRevision = revision;
    this.epoch++;
    for (const l of [...this.listeners]) {
      try {
        l(reason);
      } catch {
        // a failing listener must not keep the others from hearing it
      }
    }
    return true;
  }
}
