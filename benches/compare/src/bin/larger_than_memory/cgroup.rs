//! The memory cgroup (v1) a cell's child process reads in: made under
//! `/sys/fs/cgroup/memory` with the limit, removed when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/memory";

pub(crate) struct Cgroup {
    pub(crate) path: PathBuf,
}

impl Cgroup {
    /// Why no cgroup can be made here, if so.
    pub(crate) fn unavailable() -> Option<String> {
        let root = Path::new(CGROUP_ROOT);
        if !root.join("memory.limit_in_bytes").exists() {
            return Some(format!(
                "no cgroup v1 memory controller at {CGROUP_ROOT} (memory.limit_in_bytes missing)"
            ));
        }
        match Cgroup::create(u64::MAX / 2, "probe") {
            Ok(cg) => {
                drop(cg);
                None
            }
            Err(e) => Some(format!(
                "cannot create a memory cgroup under {CGROUP_ROOT} (needs root): {e:#}"
            )),
        }
    }

    pub(crate) fn create(limit: u64, tag: &str) -> Result<Cgroup> {
        let path =
            Path::new(CGROUP_ROOT).join(format!("mapkv-compare-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cg = Cgroup { path };
        std::fs::write(cg.path.join("memory.limit_in_bytes"), limit.to_string())
            .context("write memory.limit_in_bytes")?;
        Ok(cg)
    }

    pub(crate) fn read(&self, file: &str) -> Option<u64> {
        std::fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The `oom_kill` count of `memory.oom_control` (kernels since 4.13).
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.path.join("memory.oom_control")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Cgroup {
    /// Removes the cgroup (its processes have exited; v1 moves its page-cache charges to
    /// the parent). Retries a little, as the last exit may still be settling.
    fn drop(&mut self) {
        for attempt in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            if attempt == 10 {
                let _ = std::fs::write(self.path.join("memory.force_empty"), "0");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// Memory counters of the cgroup, as `memory.stat` gives them (bytes).
pub(crate) fn memory_stat(cgroup: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(cgroup.join("memory.stat")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            ["cache", "rss", "mapped_file", "pgmajfault"]
                .contains(&k)
                .then(|| Some((k.to_string(), v.trim().parse().ok()?)))?
        })
        .collect()
}
