/** The private etcd cluster the tests start lives with the benchmarks, which start one too. */
export * from '../src/bench/etcd-cluster.js';
