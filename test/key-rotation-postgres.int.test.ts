/**
 * `healthledger keys rotate` on a node whose records are in PostgreSQL (key-rotation.suite.ts), on a private
 * cluster this file starts and stops.
 */
import { startPostgresCluster, type PostgresCluster } from './postgres-cluster.js';
import { runKeyRotationSuite } from './key-rotation.suite.js';

let cluster: PostgresCluster | undefined;

runKeyRotationSuite({
  name: 'PostgreSQL',
  database: async () => {
    cluster = await startPostgresCluster();
    return cluster.createDatabase('records');
  },
  stop: async () => {
    await cluster?.stop();
  },
});
