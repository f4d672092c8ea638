/** `healthledger keys rotate` on a node whose records are in its embedded SQLite database (key-rotation.suite.ts). */
import { runKeyRotationSuite } from './key-rotation.suite.js';

runKeyRotationSuite({ name: 'SQLite', database: async () => undefined });
