/**
 * The clock is passed to constructors so tests and replays are deterministic.
 */

/** A source of the current time. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  nowMs(): number;
}

/** The wall clock. */
export const systemClock: Clock = { nowMs: () => Date.now() };

/** A clock that returns a fixed time until advanced (tests). */
export function fixedClock(startMs: number): Clock & { advance(ms: number): void } {
  let now = startMs;
  return {
    nowMs: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const utcTimestamp = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/**
 * Milliseconds since the epoch of an RFC 3339 UTC timestamp (`2026-01-02T03:04:05Z`, optional fraction),
 * or null for anything else: the one form of time that txs and consents carry.
 */
export function utcTimestampMs(value: unknown): number | null {
  if (typeof value !== 'string' || !utcTimestamp.test(value)) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}
