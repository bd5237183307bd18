//! Deterministic shards of a job: which items a `--shard i/N` run owns, and
//! the record that lets `merge` check that shards belong together.
//!
//! Items are dealt round-robin (item j belongs to shard j mod N), which
//! balances shards when cost varies smoothly with the index (points of one
//! cluster, cells of growing size). A job is identified by its argument
//! list without the shard and output flags, and by a SHA-256 of every input
//! file, so shards of different jobs — or of the same command line run on
//! changed inputs — are refused at merge time.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard's index, 0 ≤ index < count.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Parses `i/N` with 0 ≤ i < N.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::param(
                "shard",
                format!("`{s}`, expected i/N with 0 ≤ i < N (0-based, e.g. 0/4 … 3/4)"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether item `j` belongs to this shard.
    pub fn owns(&self, j: usize) -> bool {
        j % self.count == self.index
    }

    /// The items of `items` this shard owns, in order (by position).
    pub fn select<T: Copy>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(j, _)| self.owns(*j))
            .map(|(_, &t)| t)
            .collect()
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// The commands whose runs can be sharded and merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardKind {
    /// `kktcert distance`.
    Distance,
    /// `kktcert certify` over a series.
    Certify,
    /// `kktcert attack`.
    Attack,
    /// `kktcert reproduce`.
    Reproduce,
}

impl ShardKind {
    /// The subcommand's name, as recorded in a shard's output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Distance => "distance",
            Self::Certify => "certify",
            Self::Attack => "attack",
            Self::Reproduce => "reproduce",
        }
    }
}

impl std::fmt::Display for ShardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a shard's output records about its job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The command that wrote the shard.
    pub kind: ShardKind,
    /// This shard's index, 0 ≤ index < count.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
    /// Hex SHA-256 of the job's arguments and input contents.
    pub job: String,
    /// The full argument list of this shard's run.
    pub args: Vec<String>,
    /// How many items the whole job has (so merge can tell what is missing).
    pub items: usize,
}

/// Flags whose values differ between the shards of one job and so are left
/// out of its identity.
const PER_SHARD_FLAGS: [&str; 4] = ["--shard", "--json", "--out", "--out-dir"];

/// The arguments that identify a job: `args` without the per-shard flags
/// (`--flag value` and `--flag=value` forms both).
fn job_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        let (name, inline_value) = match a.split_once('=') {
            Some((n, _)) => (n, true),
            None => (a.as_str(), false),
        };
        if PER_SHARD_FLAGS.contains(&name) {
            skip = !inline_value;
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// The job identity of a run with arguments `args` reading `inputs`.
pub fn job_id(kind: ShardKind, args: &[String], inputs: &[&Path]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(kind.name().as_bytes());
    for a in job_args(args) {
        h.update((a.len() as u64).to_le_bytes());
        h.update(a.as_bytes());
    }
    for p in inputs {
        hash_path(&mut h, p)?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Hashes a file's bytes, or a directory's files in name order.
fn hash_path(h: &mut Sha256, p: &Path) -> Result<()> {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, "list", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|q| q.is_file())
            .collect();
        entries.sort();
        for q in entries {
            hash_path(h, &q)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, "read", e))?;
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(&bytes);
    Ok(())
}

impl ShardInfo {
    /// The record for shard `shard` of a job of `items` items.
    pub fn new(kind: ShardKind, shard: Shard, items: usize, inputs: &[&Path]) -> Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        Ok(Self {
            kind,
            index: shard.index,
            count: shard.count,
            job: job_id(kind, &args, inputs)?,
            args,
            items,
        })
    }
}

/// Checks that `infos` (one per shard output, with the file it came from)
/// are exactly the shards 0..N of one job, and returns N.
pub fn check_complete(infos: &[(String, ShardInfo)]) -> Result<usize> {
    let (first_path, first) = infos
        .first()
        .ok_or_else(|| Error::param("shards", "no shard outputs given"))?;
    // A shard record is read from a file a user may have edited: its
    // fields are checked before they index anything.
    let short = |job: &str| job.chars().take(12).collect::<String>();
    for (path, s) in infos {
        if s.index >= s.count {
            return Err(Error::Mismatch(format!(
                "{path} claims to be shard {}/{}: the index must be below the count",
                s.index, s.count
            )));
        }
        if s.job != first.job || s.kind != first.kind || s.count != first.count {
            return Err(Error::Mismatch(format!(
                "{path} is shard {}/{} of {} job {} but {first_path} is shard {}/{} of {} job {}: shards of different jobs (or changed inputs) cannot be merged",
                s.index, s.count, s.kind, short(&s.job), first.index, first.count, first.kind, short(&first.job)
            )));
        }
    }
    let n = first.count;
    let mut seen: Vec<Option<&str>> = vec![None; n];
    for (path, s) in infos {
        if let Some(prev) = seen[s.index] {
            return Err(Error::Mismatch(format!(
                "shard {}/{n} given twice: {prev} and {path}",
                s.index
            )));
        }
        seen[s.index] = Some(path);
    }
    let missing: Vec<String> = (0..n)
        .filter(|&i| seen[i].is_none())
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Mismatch(format!(
            "missing shard(s) {} of job {} ({} given)",
            missing.join(", "),
            &first.job[..12],
            infos.len()
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items() {
        let items: Vec<usize> = (0..11).collect();
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| Shard { index: i, count: 3 }.select(&items))
            .collect();
        all.sort();
        assert_eq!(all, items);
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("a/2").is_err());
    }

    #[test]
    fn job_args_drop_only_per_shard_flags() {
        let a: Vec<String> = [
            "kktcert",
            "distance",
            "--shard",
            "1/4",
            "--json=o.json",
            "--net",
            "n",
            "--out-dir",
            "x",
            "--outer",
            "y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            job_args(&a),
            ["kktcert", "distance", "--net", "n", "--outer", "y"]
        );
    }
}
