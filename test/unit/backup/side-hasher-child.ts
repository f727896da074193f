// Hashes once on a side thread and never closes it: the process must still end by itself.
import { SideHasher } from '../../../src/core/backup/side-hasher.js';

const data = Buffer.from(new SharedArrayBuffer(1000)).fill(7);
const [id] = await new SideHasher().hash(data, [[0, 1000]]);
process.stdout.write(`${id}\n`);
