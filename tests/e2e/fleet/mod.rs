//! Fleet mode: the etcd layer against a real etcd, and instances sharing
//! one record.

mod etcd;
mod instances;
mod operator;
