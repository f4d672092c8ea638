/**
 * Raw-bytes search of files at rest (the PHI scans of the store backends): which of many needles occur in
 * which files, in one pass over the bytes instead of one `indexOf` pass per needle (a PostgreSQL data dir is
 * tens of MB, and a scan looks for a hundred or more strings).
 */

/** A file's name and its raw bytes. */
export interface RawFile {
  name: string;
  bytes: Buffer;
}

const filterBits = 16;

/**
 * For each needle (UTF-8, at least 4 bytes), the names of the files whose bytes contain it; needles found
 * nowhere map to an empty list. Exact byte matching: a compressed or differently encoded copy is not found.
 */
export function findNeedles(files: readonly RawFile[], needles: readonly string[]): Map<string, string[]> {
  const encoded = needles.map((n) => Buffer.from(n, 'utf8'));
  const byKey = new Map<number, number[]>();
  const filter = new Uint8Array(1 << filterBits);
  const slot = (key: number): number => (key ^ (key >>> filterBits)) & ((1 << filterBits) - 1);
  encoded.forEach((needle, index) => {
    if (needle.length < 4) throw new Error(`needle ${index} is shorter than 4 bytes`);
    const key = needle.readUInt32LE(0);
    filter[slot(key)] = 1;
    const list = byKey.get(key);
    if (list) list.push(index);
    else byKey.set(key, [index]);
  });
  const found = new Map<string, string[]>(needles.map((n) => [n, []]));
  for (const file of files) {
    const b = file.bytes;
    if (b.length < 4) continue;
    // A rolling little-endian window of 4 bytes: after the step for position i it holds b[i..i+3].
    let key = ((b[0]! << 8) | (b[1]! << 16) | (b[2]! << 24)) >>> 0;
    for (let i = 0; i + 4 <= b.length; i++) {
      key = ((key >>> 8) | (b[i + 3]! << 24)) >>> 0;
      if (filter[slot(key)] === 0) continue;
      const candidates = byKey.get(key);
      if (candidates === undefined) continue;
      for (const index of candidates) {
        const needle = encoded[index]!;
        if (i + needle.length > b.length || b.compare(needle, 0, needle.length, i, i + needle.length) !== 0) continue;
        const names = found.get(needles[index]!)!;
        if (!names.includes(file.name)) names.push(file.name);
      }
    }
  }
  return found;
}

/** The needles found in at least one file. */
export function needlesFound(files: readonly RawFile[], needles: readonly string[]): string[] {
  return [...findNeedles(files, needles)].filter(([, names]) => names.length > 0).map(([needle]) => needle);
}
