import { describeBackendConformance } from 'stowage/testing';
import { memoryHarness } from './harness.js';

describeBackendConformance('memory backend that reuses taken names', () => memoryHarness('reuses-taken-names'));
