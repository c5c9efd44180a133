// Noticing that the registry is not the one whose history we followed: etcd wiped and restarted
// empty, restored from an older snapshot, or a new cluster at the same address; the file registry
// deleted or replaced by an older copy. Watches would otherwise wait, silently, for revisions the
// new registry may take days to reach, and our lease would be gone without a word.
//
// A store feeds what each reply tells of the registry (its cluster ID where it has one, and its
// revision) into a ResetDetector. A revision lower than the highest seen, or another cluster ID, is
// a reset: the listeners are told once, with the reason in words. (A member ID change alone is not:
// in a cluster of several members it is a failover to another member of the same registry.)

export type ResetListener = (reason: string) => void;

export class ResetDetector {
  private clusterId: string | null = null;
  private highestRevision = 0;
  private readonly listeners = new Set<ResetListener>();

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: ResetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * What one reply said: the registry's revision (0: not given) and cluster ID (null: none).
   * Returns true, after telling the listeners, when it shows a reset.
   */
  observe(revision: number, clusterId: string | null = null): boolean {
    let reason: string | null = null;
    if (clusterId !== null && this.clusterId !== null && clusterId !== this.clusterId) {
      reason = `its cluster ID changed from ${this.clusterId} to ${clusterId}`;
    } else if (revision > 0 && revision < this.highestRevision) {
      reason = `its revision went back from ${this.highestRevision} to ${revision}`;
    }
    if (clusterId !== null) this.clusterId = clusterId;
    if (reason === null) {
      if (revision > this.highestRevision) this.highestRevision = revision;
      return false;
    }
    this.highestRevision = revision;
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
