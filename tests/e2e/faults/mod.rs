//! Faults under steady traffic: regions killed, stopped, slowed and
//! flapping, failway itself killed and restarted, and a fleet instance cut
//! from etcd. Each scenario counts, at the fake regions and in failway's
//! answers, what must never happen (writes on the replica while read-only,
//! writes applied twice, writes lost or forgotten by the latch, reads
//! failing after the switch), prints the counts and asserts they are 0.

mod fleet;
mod regions;
mod restart;
mod traffic;
