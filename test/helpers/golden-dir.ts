// Where flannel's reference captures are: test/fixtures/flannel-cproxy in this repository
// (test/fixtures/flannel-cproxy/README.md says how they were made). FLANNEL_GOLDEN_DIR points the
// golden tests at another set of captures of the same traffic.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export const GOLDEN_DIR = process.env.FLANNEL_GOLDEN_DIR ?? path.join(repoDir, 'test', 'fixtures', 'flannel-cproxy');
