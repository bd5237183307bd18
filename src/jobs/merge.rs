//! Combining the outputs of `--shard i/N` runs into exactly what the
//! unsharded run writes (timing fields aside).
//!
//! Each shard output records its job (arguments and a hash of the inputs);
//! shards of different jobs, duplicates and missing shards are refused by
//! name before anything is written.

use super::output::{AttackOutput, DistanceOutput, NetAttack, SeriesOutput};
use super::shard::{check_complete, ShardInfo, ShardKind};
use crate::error::{Error, Result};
use crate::experiment::render::write;
use crate::experiment::sweep::{merge as merge_reports, Report};
use crate::io::tensors::{read_json, write_json};
use crate::paper::attack::AttackReport;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a merge wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The command whose shards were merged.
    pub kind: ShardKind,
    /// How many shards the job had.
    pub shards: usize,
}

/// A shard output read from disk.
struct Part {
    path: PathBuf,
    info: ShardInfo,
    value: Value,
}

impl Part {
    /// Reads a shard output: a JSON file, or a `reproduce` directory.
    fn read(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.to_path_buf()
        };
        let value: Value = read_json(&file)?;
        let shard = value.get("shard").cloned().ok_or_else(|| {
            Error::field(&file, "shard", "missing: not the output of a --shard run")
        })?;
        let info = serde_json::from_value(shard)
            .map_err(|e| Error::field(&file, "shard", format!("malformed: {e}")))?;
        Ok(Self {
            path: file,
            info,
            value,
        })
    }

    /// The whole document as `T`.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.value.clone()).map_err(|e| {
            Error::file(
                &self.path,
                format!("not a {} shard output: {e}", self.info.kind),
            )
        })
    }
}

/// Merges the shard outputs at `paths` into `out` (a JSON file, or a
/// directory for `reproduce`).
pub fn merge(paths: &[PathBuf], out: &Path) -> Result<Merged> {
    let mut parts = paths
        .iter()
        .map(|p| Part::read(p))
        .collect::<Result<Vec<_>>>()?;
    let labelled: Vec<(String, ShardInfo)> = parts
        .iter()
        .map(|p| (p.path.display().to_string(), p.info.clone()))
        .collect();
    let shards = check_complete(&labelled)?;
    parts.sort_by_key(|p| p.info.index);
    let kind = parts[0].info.kind;
    match kind {
        ShardKind::Distance => merge_distance(&parts, out)?,
        ShardKind::Certify => merge_certify(&parts, out)?,
        ShardKind::Attack => merge_attack(&parts, out)?,
        ShardKind::Reproduce => merge_reproduce(&parts, out)?,
    }
    Ok(Merged { kind, shards })
}

/// Checks that the shards together hold the job's `items`.
fn check_items(parts: &[Part], got: usize) -> Result<()> {
    let want = parts[0].info.items;
    if got == want {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "the shards hold {got} items but the job has {want}"
        )))
    }
}

fn merge_distance(parts: &[Part], out: &Path) -> Result<()> {
    let mut points = Vec::new();
    for p in parts {
        points.extend(p.parse::<DistanceOutput>()?.points);
    }
    check_items(parts, points.len())?;
    points.sort_by_key(|p| p.index);
    write_json(out, &DistanceOutput::new(points, None))
}

fn merge_certify(parts: &[Part], out: &Path) -> Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for p in parts {
        rows.extend(p.parse::<SeriesOutput<Value>>()?.rows);
    }
    check_items(parts, rows.len())?;
    rows.sort_by_key(|r| r.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    write_json(out, &SeriesOutput { shard: None, rows })
}

/// The per-net reports of an attack shard.
fn attack_reports(p: &Part) -> Result<Vec<NetAttack>> {
    match p.parse::<AttackOutput>()? {
        AttackOutput::Shard { reports, .. } => Ok(reports),
        _ => Err(Error::field(&p.path, "reports", "missing")),
    }
}

fn merge_attack(parts: &[Part], out: &Path) -> Result<()> {
    let per_part: Vec<Vec<NetAttack>> = parts.iter().map(attack_reports).collect::<Result<_>>()?;
    let mut merged = Vec::new();
    for (j, first) in per_part[0].iter().enumerate() {
        let reports: Vec<AttackReport> = per_part
            .iter()
            .map(|rs| rs.get(j).map(|r| r.report.clone()))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Mismatch("attack shards with different lists of nets".into()))?;
        let report = AttackReport::merge(reports)?;
        check_items(parts, report.points.len())?;
        merged.push(NetAttack {
            net: first.net.clone(),
            report,
        });
    }
    write_json(out, &AttackOutput::new(merged))
}

fn merge_reproduce(parts: &[Part], out: &Path) -> Result<()> {
    let reports = parts
        .iter()
        .map(Part::parse::<Report>)
        .collect::<Result<Vec<_>>>()?;
    let rep = merge_reports(reports)?;
    check_items(parts, rep.rows.len())?;
    write(&rep, out)
}
