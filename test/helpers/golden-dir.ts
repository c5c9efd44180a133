// Where flannel's reference captures are: FLANNEL_GOLDEN_DIR, else shared/ beside the repo
// (as on developer machines and in CI: <dir>/main and <dir>/shared).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export const GOLDEN_DIR = process.env.FLANNEL_GOLDEN_DIR ?? path.join(repoDir, '..', 'shared', 'golden', 'flannel-cproxy');
