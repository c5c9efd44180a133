// Writing the agent's files (the subnet file, the file registry and its lock) with errors that say
// what failed and why in one line: the path, the operation, and the cause in words ("no space left
// on the device") with its errno code. Control plane only.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FlannelTsError } from '../errors.js';

/** A file or directory the agent needs could not be written or created. */
export class FileWriteError extends FlannelTsError {
  override name = 'FileWriteError';
  override readonly code = 'FLANNEL_TS_ERR_FILE_WRITE';
  /** The path that failed. */
  readonly path: string;
  /** The system's errno code (e.g. "ENOSPC"), or null. */
  readonly errno: string | null;

  constructor(message: string, path: string, cause: unknown) {
    super(message, { cause });
    this.path = path;
    this.errno = errnoOf(cause);
  }
}

function errnoOf(err: unknown): string | null {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : null;
}

const CAUSES: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a component of the path is not a directory',
  EISDIR: 'it is a directory',
  EIO: 'an I/O error',
};

/** "no space left on the device (ENOSPC)"; the error's own message for causes without words. */
export function describeCause(err: unknown): string {
  const code = errnoOf(err);
  const words = code === null ? undefined : CAUSES[code];
  if (words !== undefined) return `${words} (${code})`;
  return (err as Error).message;
}

/**
 * mkdir -p with mode 0755 whatever the umask, applied only to the directories it creates. Fails
 * with a FileWriteError naming the directory that could not be created and why (Node's recursive
 * mkdir reports ENOENT for a file system that refuses new directories, such as /proc, or loops).
 */
export async function makeDirectory(dir: string, forWhat: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    try {
      const st = await stat(d);
      if (!st.isDirectory()) {
        throw new FileWriteError(`cannot create the directory ${dir} for ${forWhat}: ${d} is not a directory`, d, null);
      }
      break;
    } catch (err) {
      if (err instanceof FileWriteError) throw err;
      // ENOTDIR: some ancestor is not a directory; going up finds and names it.
      const code = errnoOf(err);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(d) === d) {
        throw new FileWriteError(`cannot create the directory ${dir} for ${forWhat}: ${describeCause(err)}`, d, err);
      }
      missing.push(d);
    }
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d, { mode: 0o755 });
      await chmod(d, 0o755);
    } catch (err) {
      if (errnoOf(err) === 'EEXIST' && (await stat(d).catch(() => null))?.isDirectory() === true) continue;
      const why =
        errnoOf(err) === 'ENOENT'
          ? `the file system at ${dirname(d)} does not allow creating directories (ENOENT)`
          : describeCause(err);
      throw new FileWriteError(`cannot create the directory ${d} for ${forWhat}: ${why}`, d, err);
    }
  }
}

/**
 * Atomic replace of `path` (temp file in the same directory, fsynced, then renamed): readers see
 * the old file or the new one, never a partial one. On failure the temporary file is removed, no
 * descriptor stays open, the old file is untouched, and a FileWriteError says why.
 */
export async function writeFileAtomically(path: string, text: string, mode: number, forWhat: string): Promise<void> {
  const dir = dirname(path);
  await makeDirectory(dir, forWhat);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let created = false;
  try {
    const fh = await open(tmp, 'wx', mode);
    created = true;
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (err) {
    if (created) await unlink(tmp).catch(() => undefined);
    throw new FileWriteError(`cannot write ${forWhat} ${path}: ${describeCause(err)}`, path, err);
  }
}
