//! Finding this host's processes by their command line (standard library only: the VM
//! tests of other crates include this file too).

use std::path::PathBuf;

/// The `/proc/<pid>` directory and the command line (arguments joined by spaces) of every
/// process whose command line contains `marker`.
pub fn with_cmdline(marker: &str) -> Vec<(PathBuf, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(marker).then(|| (e.path(), cmdline))
        })
        .collect()
}
