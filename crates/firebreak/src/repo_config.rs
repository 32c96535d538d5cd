//! A repository's own settings for `firebreak run`: `.github/firebreak.yml`, committed with
//! the workflows (GitHub ignores the file). It lets a repository opt its jobs into the
//! network and size their microVMs without every caller passing flags:
//!
//! ```yaml
//! network: true      # every job may reach the network, unless its workflow's or its own
//!                    # `env` says FIREBREAK_NETWORK: false
//! vm:
//!   cpus: 4          # a job's microVM when its runs-on labels give no size
//!   memory: 4096     # MiB
//!   disk: 20         # GiB of root filesystem
//! ```
//!
//! The command line and the environment (`--network`, `--vm-cpus`, `FIREBREAK_VM_MEMORY`…)
//! win over the file, and `runs-on` size labels over both. Unknown settings are an error,
//! so a typo does not pass silently.

use std::path::Path;

/// Where a repository keeps its settings, relative to its root.
pub const PATH: &str = ".github/firebreak.yml";

/// A repository's settings; `None` where the file says nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    pub network: Option<bool>,
    pub vm_cpus: Option<u32>,
    pub vm_memory_mib: Option<u64>,
    pub vm_disk_gib: Option<u64>,
}

/// Reads `repo`'s settings: the default when it has no file, else the file's, or why it
/// cannot be used (`path:line:col: message` for YAML errors).
pub fn load(repo: &Path) -> Result<RepoConfig, String> {
    let file = repo.join(PATH);
    let src = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RepoConfig::default()),
        Err(e) => return Err(format!("{PATH}: cannot read it: {e}")),
    };
    let text = firebreak_workflow::decode_source(PATH, &src).map_err(|d| d.to_string())?;
    let doc = firebreak_workflow::yaml_to_json(PATH, text).map_err(|d| d.to_string())?;
    parse(&doc)
}

fn parse(doc: &serde_json::Value) -> Result<RepoConfig, String> {
    use serde_json::Value;
    let mut cfg = RepoConfig::default();
    let top = match doc {
        Value::Null => return Ok(cfg),
        Value::Object(m) => m,
        _ => return Err(format!("{PATH}: expected a mapping of settings")),
    };
    for (key, value) in top {
        match key.as_str() {
            "network" => match value {
                Value::Bool(b) => cfg.network = Some(*b),
                other => {
                    return Err(format!(
                        "{PATH}: `network` must be true or false, not {other}"
                    ))
                }
            },
            "vm" => {
                let Value::Object(vm) = value else {
                    return Err(format!(
                        "{PATH}: `vm` must be a mapping (cpus, memory, disk)"
                    ));
                };
                for (k, v) in vm {
                    match k.as_str() {
                        "cpus" => cfg.vm_cpus = Some(whole(v, "vm.cpus", 1, 256)? as u32),
                        "memory" => cfg.vm_memory_mib = Some(whole(v, "vm.memory", 128, 1 << 20)?),
                        "disk" => cfg.vm_disk_gib = Some(whole(v, "vm.disk", 1, 1024)?),
                        other => {
                            return Err(format!(
                                "{PATH}: unknown setting `vm.{other}` (known: vm.cpus, vm.memory, vm.disk)"
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(format!(
                "{PATH}: unknown setting `{other}` (known: network, vm.cpus, vm.memory, vm.disk)"
            ))
            }
        }
    }
    Ok(cfg)
}

/// A whole number within `min..=max`.
fn whole(v: &serde_json::Value, name: &str, min: u64, max: u64) -> Result<u64, String> {
    v.as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            format!("{PATH}: `{name}` must be a whole number from {min} to {max}, not {v}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Result<RepoConfig, String> {
        let doc = firebreak_workflow::yaml_to_json(PATH, yaml).map_err(|d| d.to_string())?;
        parse(&doc)
    }

    #[test]
    fn settings_are_read_and_mistakes_named() {
        assert_eq!(cfg(""), Ok(RepoConfig::default()));
        assert_eq!(
            cfg("network: true\nvm:\n  cpus: 4\n  memory: 4096\n  disk: 20\n"),
            Ok(RepoConfig {
                network: Some(true),
                vm_cpus: Some(4),
                vm_memory_mib: Some(4096),
                vm_disk_gib: Some(20),
            })
        );
        for (bad, says) in [
            ("netwrk: true\n", "unknown setting `netwrk`"),
            ("network: yes please\n", "`network` must be true or false"),
            (
                "vm:\n  cpus: 0\n",
                "`vm.cpus` must be a whole number from 1 to 256",
            ),
            ("vm:\n  memory: 1.5\n", "`vm.memory` must be a whole number"),
            (
                "vm:\n  disk: 0\n",
                "`vm.disk` must be a whole number from 1 to 1024",
            ),
            ("vm:\n  swap: 2\n", "unknown setting `vm.swap`"),
            ("- a\n", "expected a mapping"),
            ("network: [\n", ".github/firebreak.yml:"),
        ] {
            let err = cfg(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_repository_without_the_file_has_the_defaults() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(d.path()), Ok(RepoConfig::default()));
        std::fs::create_dir_all(d.path().join(".github")).expect("mkdir");
        std::fs::write(d.path().join(PATH), "network: true\n").expect("write");
        assert_eq!(load(d.path()).map(|c| c.network), Ok(Some(true)));
    }
}
