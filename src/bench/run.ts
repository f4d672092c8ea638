export async function runBench(_o: { quick: boolean; out: (s: string) => void }): Promise<void> {}
