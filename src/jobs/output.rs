//! The JSON documents that `distance`, `attack` and `certify` write with
//! `--json`, as types: the CLI writes them, `merge` reads them back, and
//! other programs can rely on their shape (docs/FORMATS.md).

use super::shard::ShardInfo;
use crate::distance::deep::DeepPointDistance;
use crate::distance::{DistanceSummary, PointDistance};
use crate::paper::attack::AttackReport;
use serde::{Deserialize, Serialize};

/// `distance --json`: the summary and one record per point, plus the
/// shard's record when the run was one shard of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistanceOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The shard's record, for one shard of a job.
    pub shard: Option<ShardInfo>,
    /// Counts by status and the distances' median, min and max.
    pub summary: DistanceSummary,
    /// One record per point, by index.
    pub points: Vec<PointDistance>,
}

impl DistanceOutput {
    /// The output for `points`, summarised.
    pub fn new(points: Vec<PointDistance>, shard: Option<ShardInfo>) -> Self {
        Self {
            shard,
            summary: DistanceSummary::of(&points),
            points,
        }
    }
}

/// `distance --json` on a deep or multi-class net (or with `--box` or
/// `--target`): the summary and one record per point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeepDistanceOutput {
    /// Counts by status and the distances' median, min and max.
    pub summary: DistanceSummary,
    /// One record per point, by index.
    pub points: Vec<DeepPointDistance>,
}

impl DeepDistanceOutput {
    /// The output for `points`, summarised.
    pub fn new(points: Vec<DeepPointDistance>) -> Self {
        Self {
            summary: DistanceSummary::of_deep(&points),
            points,
        }
    }
}

/// One net's universal attack, labelled by its file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetAttack {
    /// The net's file.
    pub net: String,
    /// Its attack.
    pub report: AttackReport,
}

/// `attack --json`: the report itself for one net, a list for several,
/// and the list with the shard's record for one shard of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttackOutput {
    /// One shard of a job (always in list form, so shards merge).
    Shard {
        /// The shard's record.
        shard: ShardInfo,
        /// One report per net.
        reports: Vec<NetAttack>,
    },
    /// Several nets.
    Several(Vec<NetAttack>),
    /// A single net.
    Single(AttackReport),
}

impl AttackOutput {
    /// The output for `reports`, in the form an unsharded run writes.
    pub fn new(mut reports: Vec<NetAttack>) -> Self {
        if reports.len() == 1 {
            Self::Single(reports.remove(0).report)
        } else {
            Self::Several(reports)
        }
    }
}

/// `certify --json` over a series of checkpoints: one row per checkpoint,
/// plus the shard's record. `R` is the row type: `experiment::path::SeriesRow`
/// when writing; `merge` reads rows back as plain JSON values and only
/// reorders them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesOutput<R> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The shard's record, for one shard of a job.
    pub shard: Option<ShardInfo>,
    /// One row per checkpoint.
    pub rows: Vec<R>,
}
