//! One job over several machines: `--shard i/N` item assignment and job
//! identity ([`shard`]), the JSON outputs of sharded commands as types
//! ([`output`]), and their merge ([`merge`]).

pub mod merge;
pub mod output;
pub mod shard;
