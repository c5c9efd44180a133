/** mulberry32: a tiny seeded PRNG returning uint32s, so random tests and benches reproduce. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Seeds base..base+count-1, or only the one in $envVar when it is set (to rerun a failure). */
export function seedsFor(envVar: string, count: number, base: number): number[] {
  const only = process.env[envVar];
  return only !== undefined ? [Number(only)] : Array.from({ length: count }, (_, i) => base + i);
}

/** Runs body with mulberry32(seed); if it throws, names the seed and how to rerun it alone. */
export function runSeeded(label: string, envVar: string, seed: number, body: (rand: () => number) => void): void {
  try {
    body(mulberry32(seed));
  } catch (e) {
    console.error(`${label}: failing seed ${seed} (rerun with ${envVar}=${seed})`);
    throw e;
  }
}

/** n bytes from rand (a mulberry32). */
export function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rand() & 0xff;
  return b;
}
