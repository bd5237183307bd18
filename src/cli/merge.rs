//! `kktcert merge`: the outputs of `--shard i/N` runs combined into exactly
//! what the unsharded run writes (timing fields aside).
//!
//! Each shard output records its job (arguments and a hash of the inputs);
//! shards of different jobs, duplicates and missing shards are refused by
//! name before anything is written.

use super::attack::attack_json;
use super::distance::distance_json;
use kktcert::distance::PointDistance;
use kktcert::experiment::render::write;
use kktcert::experiment::sweep::{merge as merge_reports, Report};
use kktcert::io::tensors::{read_json, write_json};
use kktcert::jobs::shard::{check_complete, ShardInfo};
use kktcert::paper::attack::AttackReport;
use kktcert::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Shard outputs: JSON files (distance, certify, attack) or `reproduce` directories.
    #[arg(required = true, num_args = 1..)]
    shards: Vec<PathBuf>,
    /// The merged output: a JSON file, or a directory for `reproduce`.
    #[arg(long)]
    out: PathBuf,
}

/// A shard output read from disk.
struct Part {
    path: PathBuf,
    info: ShardInfo,
    value: Value,
}

fn read_part(path: &Path) -> Result<Part> {
    let file = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let value: Value = read_json(&file)?;
    let info = value
        .get("shard")
        .cloned()
        .ok_or_else(|| Error::field(&file, "shard", "missing: not the output of a --shard run"))
        .and_then(|s| {
            serde_json::from_value(s)
                .map_err(|e| Error::field(&file, "shard", format!("malformed: {e}")))
        })?;
    Ok(Part {
        path: file,
        info,
        value,
    })
}

/// Deserialises field `key` of a part.
fn field<T: serde::de::DeserializeOwned>(p: &Part, key: &str) -> Result<T> {
    let v = p
        .value
        .get(key)
        .cloned()
        .ok_or_else(|| Error::field(&p.path, key, "missing"))?;
    serde_json::from_value(v).map_err(|e| Error::field(&p.path, key, format!("malformed: {e}")))
}

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
        points.extend(field::<Vec<PointDistance>>(p, "points")?);
    }
    check_items(parts, points.len())?;
    points.sort_by_key(|p| p.index);
    write_json(out, &distance_json(&points, None))
}

fn merge_certify(parts: &[Part], out: &Path) -> Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for p in parts {
        rows.extend(field::<Vec<Value>>(p, "rows")?);
    }
    check_items(parts, rows.len())?;
    rows.sort_by_key(|r| r.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    write_json(out, &serde_json::json!({ "rows": rows }))
}

/// One `{net, report}` entry of an attack shard.
#[derive(serde::Deserialize)]
struct NetReport {
    net: String,
    report: AttackReport,
}

fn merge_attack(parts: &[Part], out: &Path) -> Result<()> {
    let per_part: Vec<Vec<NetReport>> = parts
        .iter()
        .map(|p| field(p, "reports"))
        .collect::<Result<_>>()?;
    let nets: Vec<String> = per_part[0].iter().map(|r| r.net.clone()).collect();
    let mut merged = Vec::new();
    for (j, net) in nets.iter().enumerate() {
        let reports = per_part
            .iter()
            .map(|rs| rs.get(j).map(|r| r.report.clone()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Mismatch("attack shards with different lists of nets".into()))?;
        let rep = AttackReport::merge(reports)?;
        check_items(parts, rep.points.len())?;
        merged.push((net.clone(), rep));
    }
    write_json(out, &attack_json(&merged))
}

fn merge_reproduce(parts: &[Part], out: &Path) -> Result<()> {
    let reports = parts
        .iter()
        .map(|p| {
            serde_json::from_value::<Report>(p.value.clone())
                .map_err(|e| Error::file(&p.path, format!("not a reproduce report: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let rep = merge_reports(reports)?;
    check_items(parts, rep.rows.len())?;
    write(&rep, out)
}

pub fn run(a: Args) -> Result<()> {
    let parts = a
        .shards
        .iter()
        .map(|p| read_part(p))
        .collect::<Result<Vec<_>>>()?;
    let labelled: Vec<(String, ShardInfo)> = parts
        .iter()
        .map(|p| (p.path.display().to_string(), p.info.clone()))
        .collect();
    let n = check_complete(&labelled)?;
    let mut parts = parts;
    parts.sort_by_key(|p| p.info.index);
    match parts[0].info.kind.as_str() {
        "distance" => merge_distance(&parts, &a.out)?,
        "certify" => merge_certify(&parts, &a.out)?,
        "attack" => merge_attack(&parts, &a.out)?,
        "reproduce" => merge_reproduce(&parts, &a.out)?,
        other => {
            return Err(Error::field(
                &parts[0].path,
                "shard.kind",
                format!("`{other}`, expected distance, certify, attack or reproduce"),
            ))
        }
    }
    say!(
        "merged {n} {} shards → {}",
        parts[0].info.kind,
        a.out.display()
    );
    Ok(())
}
