//! Machine sizes asked for in `runs-on` labels, the way larger hosted runners are named: a label
//! (or a dash-separated part of one) such as `4cpu`, `4-cores`, `2vcpu`, `512mb`, `0.5gb` or
//! `16gb` (memory), and `20gb-disk`, `disk-20gb` or `150gb-ssd` (the root filesystem); the
//! one-letter units of `8g` or `512m` only as a whole label, so that `gpu-1g` stays a name. The
//! QEMU and Firecracker microVMs apply all of them; the namespace sandbox makes memory and CPUs
//! cgroup limits where it can; the host sandbox applies none. Each sandbox says in the job log
//! what it did not apply.
//!
//! `runs-on: [ubuntu-latest, 1cpu, 512mb]` and `runs-on: linux-4-cores-16gb-150gb-ssd` both work.

use crate::sandbox::ResourceLimits;

/// The limits the labels ask for; later labels win. Labels without a size part are ignored,
/// and so are sizes out of range (see [`refused_sizes`]).
pub fn limits_from_labels(labels: &[String]) -> ResourceLimits {
    scan(labels).0
}

/// The sizes in `labels` that have a unit but a value out of range (`0cpu`, `2048gb`,
/// `100tb-disk`), each described for the job log: `'0cpu': 0 CPUs (whole CPUs, 1 to 256 allowed)`.
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

/// A label part's leading number (`16`, `0.5`, digits beyond any integer type) and the rest.
fn number(part: &str) -> Option<(f64, &str)> {
    let int = part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if int == 0 {
        return None;
    }
    let mut end = int;
    if let Some(frac) = part[int..].strip_prefix('.') {
        let digits = frac.len() - frac.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            end += 1 + digits;
        }
    }
    let value = part[..end].parse::<f64>().ok()?;
    Some((value, &part[end..]))
}

fn scan(labels: &[String]) -> (ResourceLimits, Vec<String>) {
    let mut limits = ResourceLimits::default();
    let mut refused = Vec::new();
    for label in labels {
        let lower = label.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split(['-', '_']).collect();
        // One-letter units (`8g`, `512m`) only where they are the whole label: as part of a
        // name (`gpu-1g`, `runner-1m`) they are too likely something else.
        let whole = parts.len() == 1;
        let mut refuse = |why: String| refused.push(format!("'{label}': {why}"));
        // A disk word ("ssd") belongs to the size before it ("150gb-ssd") if
        // there is one, else to the size after it ("disk-20gb").
        let mut disk_word_taken = None;
        for (i, part) in parts.iter().enumerate() {
            let Some((n, unit)) = number(part) else {
                continue;
            };
            let next = parts.get(i + 1).copied().unwrap_or("");
            // "4-cores": the number is its own part.
            if unit.is_empty() && is_cpu_unit(next) {
                match cpus(n, part) {
                    Size::Ok(m) => limits.cpu_millis = Some(m),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
                continue;
            }
            if unit.len() == 1 && !whole {
                continue;
            }
            let prev_is_free_disk_word =
                i > 0 && is_disk_word(parts[i - 1]) && disk_word_taken != Some(i - 1);
            if is_cpu_unit(unit) {
                match cpus(n, part) {
                    Size::Ok(m) => limits.cpu_millis = Some(m),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
            } else if is_disk_word(next) || prev_is_free_disk_word {
                if is_disk_word(next) {
                    disk_word_taken = Some(i + 1);
                }
                match disk_mib(n, unit, part) {
                    Size::Ok(mib) => limits.disk_bytes = Some(mib << 20),
                    Size::OutOfRange(why) => refuse(why),
                    Size::No => {}
                }
            } else {
                match memory_mib(n, unit, part) {
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

/// `n` units of `unit_mib` MiB each, in whole MiB, if that is within `range`.
fn mib_in(n: f64, unit_mib: u64, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    // Both bounds are far below 2^53, so the float comparison is exact where it matters.
    let mib = (n * unit_mib as f64).floor();
    (mib >= *range.start() as f64 && mib <= *range.end() as f64).then_some(mib as u64)
}

fn disk_mib(n: f64, unit: &str, asked: &str) -> Size<u64> {
    let unit_mib = match unit {
        "gb" | "gib" | "g" => 1024,
        "tb" | "tib" | "t" => 1024 * 1024,
        _ => return Size::No,
    };
    match mib_in(n, unit_mib, 1024..=64 << 20) {
        Some(mib) => Size::Ok(mib),
        None => Size::OutOfRange(format!("a {asked} disk (1 GiB to 64 TiB allowed)")),
    }
}

fn cpus(n: f64, asked: &str) -> Size<u32> {
    if n.fract() == 0.0 && (1.0..=256.0).contains(&n) {
        // A whole number from 1 to 256: the cast is exact.
        Size::Ok(n as u32 * 1000)
    } else {
        let n = asked.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        Size::OutOfRange(format!("{n} CPUs (whole CPUs, 1 to 256 allowed)"))
    }
}

fn memory_mib(n: f64, unit: &str, asked: &str) -> Size<u64> {
    let unit_mib = match unit {
        "mb" | "mib" | "m" => 1,
        "gb" | "gib" | "g" => 1024,
        _ => return Size::No,
    };
    match mib_in(n, unit_mib, 64..=1 << 20) {
        Some(mib) => Size::Ok(mib),
        None => Size::OutOfRange(format!("{asked} of memory (64 MiB to 1 TiB allowed)")),
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
        // Fractions of a unit, as whole MiB.
        assert_eq!(l(&["0.5gb"]), (None, Some(512)));
        assert_eq!(l(&["linux-1.5g"]), (None, None));
        assert_eq!(l(&["1.5g"]), (None, Some(1536)));
        // One-letter units inside a name are part of the name.
        assert_eq!(l(&["gpu-1g", "runner-1m", "x-8m"]), (None, None));
        assert_eq!(l(&["8g"]), (None, Some(8192)));
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
                "'0cpu': 0 CPUs (whole CPUs, 1 to 256 allowed)",
                "'9999-cores': 9999 CPUs (whole CPUs, 1 to 256 allowed)",
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
        // Fractions of a CPU and numbers beyond any integer are refused, not ignored.
        assert_eq!(
            r(&["1.5cpu", "99999999999999999999gb", "0.01gb"]),
            [
                "'1.5cpu': 1.5 CPUs (whole CPUs, 1 to 256 allowed)",
                "'99999999999999999999gb': 99999999999999999999gb of memory (64 MiB to 1 TiB allowed)",
                "'0.01gb': 0.01gb of memory (64 MiB to 1 TiB allowed)",
            ]
        );
        // A refused size leaves the default (or an earlier size) in place.
        assert_eq!(l(&["2cpu", "0cpu", "512mb", "1m"]), (Some(2000), Some(512)));
    }
}
