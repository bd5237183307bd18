//! One job over several machines: `--shard i/N` item assignment and job
//! identity ([`shard`]).

pub mod shard;
