import { startCephS3 } from './test/helpers/s3-server.ts';
import { mkdirSync } from 'node:fs';
mkdirSync('/tmp/stowage-s3-run-999999-deadbeef');
await startCephS3('/tmp/stowage-s3-run-999999-deadbeef/ceph');
console.log('started');
