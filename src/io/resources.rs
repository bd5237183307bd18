//! Refusing work that cannot fit in memory *before* allocating it.
//!
//! A failed allocation aborts the process (signal 6 and a backtrace), which
//! is no answer for a user who asked for a certificate at n = 60,000. Solvers
//! estimate their peak memory up front and call [`ensure_fits`], which
//! compares it with the memory the OS reports available (`MemAvailable` in
//! `/proc/meminfo`), or with `KKTCERT_MEMORY_LIMIT` (bytes, or with a K/M/G
//! suffix) when set, and returns a parameter error that says what was
//! asked, what it needs, and what to do instead.

use crate::error::{Error, Result};

/// Bytes the OS reports available for new allocations, if it says.
fn os_available() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Parses `4G`, `512M`, `100000` (bytes).
fn parse_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1024.0),
        'M' | 'm' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        'G' | 'g' => (&s[..s.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

/// The memory budget: `KKTCERT_MEMORY_LIMIT` if set, else what the OS
/// reports available, else unlimited.
pub fn budget() -> Option<f64> {
    match std::env::var("KKTCERT_MEMORY_LIMIT") {
        Ok(s) => parse_size(&s),
        Err(_) => os_available(),
    }
}

fn human(bytes: f64) -> String {
    const G: f64 = 1024.0 * 1024.0 * 1024.0;
    if bytes >= G {
        format!("{:.1} GiB", bytes / G)
    } else if bytes >= 1024.0 * 1024.0 {
        format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    }
}

/// Fails with a clear error when `bytes` (an estimate of the peak memory of
/// `what`) exceeds the budget; `instead` says what the user can do.
pub fn ensure_fits(what: &str, bytes: f64, instead: &str) -> Result<()> {
    match budget() {
        Some(limit) if bytes > limit => Err(Error::OutOfMemory {
            what: what.into(),
            need: human(bytes),
            available: human(limit),
            instead: instead.into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4G"), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size("512m"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_size("1000"), Some(1000.0));
        assert_eq!(parse_size("x"), None);
    }
}
