// Process signals belong to the command line, not to the agent objects: several agents may run in
// one process (tests), and none of them may leave a process-wide handler behind.

/** Resolves on the first SIGINT/SIGTERM with its name; SIGUSR1 calls onUsr1 meanwhile. */
export function waitForStopSignal(onUsr1: () => void): { promise: Promise<string>; dispose(): void } {
  let dispose = (): void => {};
  const promise = new Promise<string>((resolve) => {
    const onInt = (): void => finish('SIGINT');
    const onTerm = (): void => finish('SIGTERM');
    const finish = (signal: string): void => {
      dispose();
      resolve(signal);
    };
    dispose = () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGUSR1', onUsr1);
    };
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    process.on('SIGUSR1', onUsr1);
  });
  return { promise, dispose: () => dispose() };
}
