//! Machine sizes asked for in `runs-on` labels, the way larger hosted runners are named: a label
//! (or a dash-separated part of one) such as `4cpu`, `4-cores`, `2vcpu`, `512mb` or `16gb`
//! (memory), and `20gb-disk`, `disk-20gb` or `150gb-ssd` (the root filesystem). The QEMU
//! microVMs apply all of them; Firecracker applies vCPUs and memory and notes the disk size as
//! not applied; the namespace sandbox makes memory and CPUs cgroup limits where it can; the host
//! sandbox applies none. Each sandbox says in the job log what it did not apply.
//!
//! `runs-on: [ubuntu-latest, 1cpu, 512mb]` and `runs-on: linux-4-cores-16gb-150gb-ssd` both work.

use crate::sandbox::ResourceLimits;

/// The limits the labels ask for; later labels win. Labels without a size part are ignored,
/// and so are sizes out of range (see [`refused_sizes`]).
pub fn limits_from_labels(labels: &[String]) -> ResourceLimits {
    scan(labels).0
}

/// The sizes in `labels` that have a unit but a value out of range (`0cpu`, `2048gb`,
/// `100tb-disk`), each described for the job log: `'0cpu': 0 CPUs (1 to 256 allowed)`.
pub fn refused_sizes(labels: &[String]) -> Vec<String> {
    scan(labels).1
}

/// A number with a unit, read as one kind of size.
enum Size<T> {
    /// In range.
    Ok(T),
    /// The unit fits, the value does not: what was asked, for the job log.
    OutOfRange(String),
    /// Not this kind of size.
    No,
}

fn scan(labels: &[String]) -> (ResourceLimits, Vec<String>) {
    let mut limits = ResourceLimits::default();
    let mut refused = Vec::new();
    for label in labels {
        let lower = label.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split(['-', '_']).collect();
        let mut refuse = |why: String| refused.push(format!("'{label}': {why}"));
        // A disk word ("ssd") belongs to the size before it ("150gb-ssd") if
        // there is one, else to the size after it ("disk-20gb").
        let mut disk_word_taken = None;
        for (i, part) in parts.iter().enumerate() {
            // "4-cores": the number is its own part.
            let next = parts.get(i + 1).copied().unwrap_or("");
            if let (Ok(n), true) = (part.parse::<u32>(), is_cpu_unit(next)) {
                match cpus(n) {
                    Size::Ok(m) => limits.cpu_millis = Some(m),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
                continue;
            }
            let digits = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                continue;
            }
            let (num, unit) = part.split_at(digits);
            let Ok(n) = num.parse::<u64>() else { continue };
            let prev_is_free_disk_word =
                i > 0 && is_disk_word(parts[i - 1]) && disk_word_taken != Some(i - 1);
            if is_cpu_unit(unit) {
                match u32::try_from(n).map_or_else(|_| cpus(u32::MAX), cpus) {
                    Size::Ok(m) => limits.cpu_millis = Some(m),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
            } else if is_disk_word(next) || prev_is_free_disk_word {
                if is_disk_word(next) {
                    disk_word_taken = Some(i + 1);
                }
                match disk_mib(n, unit) {
                    Size::Ok(mib) => limits.disk_bytes = Some(mib << 20),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
            } else {
                match memory_mib(n, unit) {
                    Size::Ok(mib) => limits.memory_bytes = Some(mib << 20),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
            }
        }
    }
    (limits, refused)
}

fn is_cpu_unit(s: &str) -> bool {
    matches!(s, "cpu" | "cpus" | "vcpu" | "vcpus" | "core" | "cores")
}

fn is_disk_word(s: &str) -> bool {
    matches!(s, "disk" | "ssd" | "storage")
}

fn disk_mib(n: u64, unit: &str) -> Size<u64> {
    let mib = match unit {
        "gb" | "gib" | "g" => n.checked_mul(1024),
        "tb" | "tib" | "t" => n.checked_mul(1024 * 1024),
        _ => return Size::No,
    };
    match mib {
        Some(mib) if (1024..=64 << 20).contains(&mib) => Size::Ok(mib),
        _ => Size::OutOfRange(format!("a {n}{unit} disk (1 GiB to 64 TiB allowed)")),
    }
}

fn cpus(n: u32) -> Size<u32> {
    if (1..=256).contains(&n) {
        Size::Ok(n * 1000)
    } else {
        Size::OutOfRange(format!("{n} CPUs (1 to 256 allowed)"))
    }
}

fn memory_mib(n: u64, unit: &str) -> Size<u64> {
    let mib = match unit {
        "mb" | "mib" | "m" => Some(n),
        "gb" | "gib" | "g" => n.checked_mul(1024),
        _ => return Size::No,
    };
    match mib {
        Some(mib) if (64..=1 << 20).contains(&mib) => Size::Ok(mib),
        _ => Size::OutOfRange(format!("{n}{unit} of memory (64 MiB to 1 TiB allowed)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(labels: &[&str]) -> (Option<u32>, Option<u64>) {
        let owned: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let r = limits_from_labels(&owned);
        (r.cpu_millis, r.memory_bytes.map(|b| b >> 20))
    }

    #[test]
    fn sizes_in_labels() {
        assert_eq!(l(&["ubuntu-latest"]), (None, None));
        assert_eq!(
            l(&["ubuntu-latest", "1cpu", "512mb"]),
            (Some(1000), Some(512))
        );
        assert_eq!(l(&["linux-4-cores-16gb"]), (Some(4000), Some(16384)));
        assert_eq!(l(&["2vCPU", "4GiB"]), (Some(2000), Some(4096)));
        assert_eq!(l(&["ubuntu-22.04", "8-core"]), (Some(8000), None));
        // Not sizes: versions, too small or absurd values, bare numbers.
        assert_eq!(
            l(&["ubuntu-22.04", "node-20", "1m", "0cpu", "9999cpu"]),
            (None, None)
        );
        // Later labels win.
        assert_eq!(
            l(&["1cpu", "2cpu", "1gb", "512mb"]),
            (Some(2000), Some(512))
        );
    }

    fn disk(labels: &[&str]) -> (Option<u64>, Option<u64>) {
        let owned: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let r = limits_from_labels(&owned);
        (
            r.memory_bytes.map(|b| b >> 20),
            r.disk_bytes.map(|b| b >> 30),
        )
    }

    #[test]
    fn disk_sizes_in_labels() {
        assert_eq!(disk(&["ubuntu-latest", "20gb-disk"]), (None, Some(20)));
        assert_eq!(disk(&["disk-20gb"]), (None, Some(20)));
        assert_eq!(
            disk(&["linux-4-cores-16gb-150gb-ssd"]),
            (Some(16384), Some(150))
        );
        assert_eq!(disk(&["1tb-storage"]), (None, Some(1024)));
        // "ssd" goes with the size before it, so the size after it is memory.
        assert_eq!(disk(&["linux-150gb-ssd-16gb"]), (Some(16384), Some(150)));
        assert_eq!(disk(&["linux-16gb-150gb-ssd"]), (Some(16384), Some(150)));
        // A disk label is a size label, not an unknown one.
        assert!(!limits_from_labels(&["20gb-disk".to_string()]).is_empty());
        // Megabytes are no disk size; below 1 GiB is refused.
        assert_eq!(disk(&["512mb-disk", "0gb-ssd"]), (None, None));
    }

    #[test]
    fn sizes_out_of_range_are_named() {
        let r = |labels: &[&str]| {
            refused_sizes(&labels.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            r(&[
                "ubuntu-latest",
                "0cpu",
                "9999-cores",
                "2048gb",
                "100tb-disk",
                "1m"
            ]),
            [
                "'0cpu': 0 CPUs (1 to 256 allowed)",
                "'9999-cores': 9999 CPUs (1 to 256 allowed)",
                "'2048gb': 2048gb of memory (64 MiB to 1 TiB allowed)",
                "'100tb-disk': a 100tb disk (1 GiB to 64 TiB allowed)",
                "'1m': 1m of memory (64 MiB to 1 TiB allowed)",
            ]
        );
        // Sizes in range, versions and other labels are not refused.
        assert!(r(&[
            "ubuntu-22.04",
            "node-20",
            "4cpu",
            "16gb",
            "20gb-disk",
            "x64"
        ])
        .is_empty());
        // A refused size leaves the default (or an earlier size) in place.
        assert_eq!(l(&["2cpu", "0cpu", "512mb", "1m"]), (Some(2000), Some(512)));
    }
}
