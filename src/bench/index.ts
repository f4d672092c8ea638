/**
 * @module bench
 * `healthledger bench`: measures the DESIGN.md §10 budgets on this machine and prints a table. Numbers are
 * measured, never estimated. May import everything except cli.
 */
export { benchGroups, runBench } from './run.js';
