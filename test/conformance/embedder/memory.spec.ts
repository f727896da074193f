import { describeBackendConformance } from 'stowage/testing';
import { memoryHarness } from './harness.js';

describeBackendConformance('memory backend of an embedding project', () => memoryHarness());
