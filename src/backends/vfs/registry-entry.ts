import { z } from 'zod';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import { isValidVolumeName } from '../../core/names.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { volumeRecordSchema } from '../../core/schema/volume-record.js';

/**
 * A single path component stowage could have made: what a volume name may be. Anything else
 * (`..`, `/etc`, `a/b`, a dot-file) would name a path outside the volume namespace.
 */
export const STORE_COMPONENT = /^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;

/** On-disk form of one registry entry: the volume plus where its data lives, relative to the store. */
export const registryEntrySchema = z.object({
  format: z.literal(1),
  // A name no request can give (too short or long) would be listed, yet could not be inspected or removed.
  record: volumeRecordSchema.extend({ name: z.string().regex(STORE_COMPONENT).refine(isValidVolumeName, 'not a volume name requests can give') }),
  dataDir: z.string().regex(STORE_COMPONENT, 'a single path component inside the store'),
});

export type RegistryEntry = z.infer<typeof registryEntrySchema>;

/** The entry in `text`, read from `file` for volume `name`: refused unless it is that volume's, its data under its own name. */
export function parseRegistryEntry(text: string, file: string, name: string): RegistryEntry {
  const entry = parseRecordText(registryEntrySchema, text, `registry entry ${file}`, name);
  if (entry.record.name !== name) {
    throw new StowageError(ErrorCodes.STATE_CORRUPT,
      `registry entry ${file} describes volume ${JSON.stringify(entry.record.name)}, not ${name}`, { volume: name });
  }
  // stowage keeps a volume's data under its own name; another name would alias a second volume's data.
  if (entry.dataDir !== name) {
    throw new StowageError(ErrorCodes.STATE_CORRUPT,
      `registry entry ${file} points at ${JSON.stringify(entry.dataDir)}, not at the volume's own directory`, { volume: name });
  }
  return entry;
}
