// The one-line message for an unknown flag: Go's flag wording, plus the nearest known flag
// ("did you mean --etcd-cafile?") or, for a flanneld flag flannel-ts does not have, what it is.

/** flanneld (v0.7-v0.17) flags flannel-ts does not have, and why. */
const FLANNELD_ONLY: Readonly<Record<string, string>> = {
  'kube-subnet-mgr': 'flannel-ts keeps its registry in etcd or a file, not in the Kubernetes API',
  'kube-api-url': 'flannel-ts has no Kubernetes subnet manager',
  'kube-annotation-prefix': 'flannel-ts has no Kubernetes subnet manager',
  'kubeconfig-file': 'flannel-ts has no Kubernetes subnet manager',
  'net-config-path': 'flannel-ts reads the network config from the registry (<prefix>/config)',
  'set-node-network-unavailable': 'flannel-ts has no Kubernetes subnet manager',
  'public-ipv6': 'flannel-ts carries IPv4 only',
  'iptables-resync': 'flannel-ts installs its iptables rules once, at startup',
  vmodule: 'use --log-level or -v',
  log_backtrace_at: 'use --log-level or -v',
};

/** Flag names compared without case, dashes or underscores: "etcd-ca-file" ~ "etcd_cafile". */
function normalized(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

/** Levenshtein distance (insertions, deletions, substitutions), with adjacent swaps counted as one. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => i || j));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[rows - 1]![cols - 1]!;
}

/**
 * The known flag `name` most likely meant, or null: the same flag spelled with other dashes,
 * underscores or case; else the only flag it abbreviates; else the closest by edit distance, if
 * within a third of the name's length (ties: the first in `known`).
 */
export function nearestFlag(name: string, known: readonly string[]): string | null {
  const wanted = normalized(name);
  if (wanted === '') return null;
  const same = known.find((k) => normalized(k) === wanted);
  if (same !== undefined) return same;
  const extended = known.filter((k) => normalized(k).startsWith(wanted));
  if (extended.length === 1 && wanted.length >= 3) return extended[0]!;
  let best: string | null = null;
  let bestDistance = Math.max(1, Math.floor(wanted.length / 3)) + 1;
  for (const k of known) {
    const distance = editDistance(wanted, normalized(k));
    if (distance < bestDistance) {
      best = k;
      bestDistance = distance;
    }
  }
  return best;
}

/** Go's "flag provided but not defined: -NAME", with a hint; always one line. */
export function unknownFlagMessage(name: string, known: readonly string[]): string {
  const base = `flag provided but not defined: -${name}`;
  const flanneldOnly = FLANNELD_ONLY[name];
  if (flanneldOnly !== undefined) return `${base} (a flanneld flag flannel-ts does not have: ${flanneldOnly})`;
  const nearest = nearestFlag(name, known);
  return nearest === null ? base : `${base}; did you mean --${nearest}?`;
}
