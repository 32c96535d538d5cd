//! `firebreak image build|list|prune`: guest images for the microVM sandboxes.
//!
//! An image is a kernel (Debian's cloud kernel package, or with `--kernel minimal` one compiled
//! from Debian's kernel source with firebreak's configuration; bzImage for QEMU, the ELF vmlinux
//! for Firecracker), an initramfs that loads the virtio modules, and an ext4 root filesystem built from debootstrap
//! with firebreak's guest agent; images live in a content-addressed cache
//! (`$XDG_CACHE_HOME/firebreak/images/<hash>/`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use firebreak_vm::image::{locate_agent, BuildEvent, KeptWhy};
use firebreak_vm::{ImageSpec, ImageStore, KernelKind};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{style, Format};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the default guest image (or find it in the cache) and make it the one runs boot.
    /// Needs root, debootstrap, e2fsprogs, busybox-static, lz4 and a static firebreak-agent;
    /// the first build takes minutes.
    Build {
        /// The static guest agent to install (default: $FIREBREAK_AGENT, beside this binary, or
        /// target/x86_64-unknown-linux-gnu/release/firebreak-agent).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Extra Debian packages for a larger flavour (e.g. build-essential); repeatable.
        #[arg(long = "package", value_name = "NAME")]
        packages: Vec<String>,
        /// Where the guest kernel comes from: `package` (Debian's linux-image-cloud-amd64, every
        /// driver available as a module) or `minimal` (compiled once from Debian's
        /// linux-source-6.1 with firebreak's configuration: boots in about half the time; needs
        /// linux-source-6.1, gcc, make, flex, bison, bc and libelf-dev, and minutes to compile).
        #[arg(long, value_enum, default_value = "package")]
        kernel: KernelArg,
    },
    /// List built images, newest first, with their kernel, flavour (packages beyond the standard
    /// set) and agent protocol; `(default)` marks the one `run` boots ($FIREBREAK_IMAGE's, else
    /// the one `image build` last built or found, else the newest).
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Same as `--format json`.
        #[arg(long)]
        json: bool,
    },
    /// Remove old images: all but the newest of each kernel kind and flavour, those whose agent
    /// this firebreak cannot talk to, and the base trees and kernels only they used (not while
    /// an image build runs). Lists what it removes. Never removes an image a running
    /// `firebreak run` uses, nor the one runs boot ($FIREBREAK_IMAGE's or the default).
    Prune {
        /// How many of the newest images of each kernel kind (Debian's, minimal) and flavour to
        /// keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
        /// Also remove the snapshots of the images kept (one accumulates per VM size and
        /// network setting used; each is taken again when next needed).
        #[arg(long)]
        snapshots: bool,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `--kernel`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    Package,
    Minimal,
}

impl From<KernelArg> for KernelKind {
    fn from(k: KernelArg) -> Self {
        match k {
            KernelArg::Package => KernelKind::Package,
            KernelArg::Minimal => KernelKind::Minimal,
        }
    }
}

pub fn run(cmd: &ImageCommand) -> Result<ExitCode> {
    let store = ImageStore::open_default();
    match cmd {
        ImageCommand::Build {
            agent,
            packages,
            kernel,
        } => build(&store, agent.clone(), packages, (*kernel).into()),
        ImageCommand::List { format, json } => {
            list(&store, if *json { Format::Json } else { *format })
        }
        ImageCommand::Prune {
            keep,
            snapshots,
            dry_run,
        } => {
            let opts = firebreak_vm::image::PruneOptions {
                selected: selected_image(&store),
                keep: *keep,
                snapshots: *snapshots,
                dry_run: *dry_run,
            };
            prune(&store, opts)
        }
    }
}

fn build(
    store: &ImageStore,
    agent: Option<PathBuf>,
    packages: &[String],
    kernel: KernelKind,
) -> Result<ExitCode> {
    let agent = match agent {
        Some(a) => a,
        // Its error names where it looked and how to build one.
        None => locate_agent()?,
    };
    let mut spec = ImageSpec::new(agent).with_kernel(kernel);
    spec.packages.extend(packages.iter().cloned());
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut on_event = |ev: BuildEvent| match ev {
        BuildEvent::Step { index, total, what } => match &bar {
            Some(b) => {
                b.set_length(u64::from(total));
                b.set_position(u64::from(index.saturating_sub(1)));
                b.set_message(what);
            }
            None => eprintln!("[{index}/{total}] {what}"),
        },
        BuildEvent::Detail(line) => {
            if let Some(b) = &bar {
                b.set_message(line);
            }
        }
        BuildEvent::Done { hash, cached } => {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let how = if cached {
                "found in the cache"
            } else {
                "built"
            };
            eprintln!("{} image {hash} {how}", style::err_green("✓"));
        }
    };
    let image = store.build(&spec, &mut on_event)?;
    crate::outln!("{}", image.dir.display())?;
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `Debian's 6.1.0-50-cloud-amd64` / `minimal 6.1.192-firebreak`.
fn kernel_of(m: &firebreak_vm::image::Manifest) -> String {
    match m.kernel {
        KernelKind::Package => format!("Debian's {}", m.kernel_release),
        KernelKind::Minimal => format!("minimal {}", m.kernel_release),
    }
}

/// `protocol 4`, `protocol 3, outdated`, or `unrecorded` (images built before it was).
fn agent_of(m: &firebreak_vm::image::Manifest) -> String {
    match m.agent_protocol {
        Some(p) if m.usable() => format!("protocol {p}"),
        Some(p) => format!("protocol {p}, outdated"),
        None => "unrecorded".into(),
    }
}

/// How long ago `unix` seconds was: `3 h ago`, `2 d ago`.
fn age(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(unix);
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// What `$FIREBREAK_IMAGE` asks runs to boot (a hash or a prefix of one), if it is set.
pub(crate) fn wanted_image() -> Option<String> {
    std::env::var("FIREBREAK_IMAGE")
        .ok()
        .filter(|h| !h.is_empty())
}

/// The hash of the image `$FIREBREAK_IMAGE` selects, if any.
fn selected_image(store: &ImageStore) -> Option<String> {
    wanted_image()
        .and_then(|h| store.get(&h).ok().flatten())
        .map(|i| i.manifest.hash)
}

fn list(store: &ImageStore, format: Format) -> Result<ExitCode> {
    let images = store.list()?;
    // The image `run` boots: $FIREBREAK_IMAGE's, else the default one.
    let chosen = store
        .choose(wanted_image().as_deref())
        .ok()
        .map(|i| i.manifest.hash);
    let is_default = |i: &firebreak_vm::image::Image| chosen.as_deref() == Some(&i.manifest.hash);
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = images
                .iter()
                .map(|img| {
                    serde_json::json!({
                        "dir": img.dir.display().to_string(),
                        "manifest": img.manifest,
                        "disk_bytes": img.disk_usage(),
                        "default": is_default(img),
                        "flavour": img.manifest.flavour(),
                        "usable": img.manifest.usable(),
                    })
                })
                .collect();
            crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        }
        Format::Text => {
            if images.is_empty() {
                crate::outln!("no images yet: build one with `firebreak image build`")?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    let m = &i.manifest;
                    vec![
                        m.hash.clone(),
                        kernel_of(m),
                        m.flavour(),
                        agent_of(m),
                        age(m.created_unix),
                        mib(i.disk_usage()),
                        i.dir.display().to_string(),
                    ]
                })
                .collect();
            let header = [
                "IMAGE", "KERNEL", "FLAVOUR", "AGENT", "BUILT", "ON DISK", "FOLDER",
            ];
            let width = |c: usize| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            };
            // Every column but the last padded; sizes right-aligned.
            let line = |cells: &[String]| {
                let mut out = String::new();
                for (c, cell) in cells.iter().enumerate() {
                    let w = width(c);
                    match c {
                        5 => out.push_str(&format!("{cell:>w$}  ")),
                        6 => out.push_str(cell),
                        _ => out.push_str(&format!("{cell:<w$}  ")),
                    }
                }
                out
            };
            let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
            crate::outln!("{}", style::bold(&line(&head)))?;
            for (img, r) in images.iter().zip(&rows) {
                let mark = if is_default(img) { "  (default)" } else { "" };
                crate::outln!("{}{mark}", line(r))?;
            }
            if images.iter().any(|i| !i.manifest.usable()) {
                crate::outln!(
                    "{}",
                    style::dim(
                        "outdated: an agent firebreak can no longer talk to; `firebreak image prune` removes them"
                    )
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(store: &ImageStore, opts: firebreak_vm::image::PruneOptions) -> Result<ExitCode> {
    let r = store.prune(opts.clone())?;
    let verb = if opts.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (img, bytes) in &r.images {
        let m = &img.manifest;
        crate::outln!(
            "{verb} image {}  ({}, {}, built {}, {}{})",
            m.hash,
            kernel_of(m),
            m.flavour(),
            age(m.created_unix),
            mib(*bytes),
            if m.usable() { "" } else { ", outdated agent" }
        )?;
    }
    for s in &r.snapshots {
        crate::outln!("{verb} snapshot {}", s.display())?;
    }
    for (img, why) in &r.kept {
        let why = match why {
            KeptWhy::InUse if opts.snapshots => {
                "it and its snapshots are in use by a running `firebreak run`"
            }
            KeptWhy::InUse => "in use by a running `firebreak run`",
            KeptWhy::Selected => "runs boot it ($FIREBREAK_IMAGE selects it, or it is the default)",
        };
        crate::outln!("kept image {}: {why}", img.manifest.hash)?;
    }
    for o in &r.other {
        crate::outln!("{verb} {}", o.display())?;
    }
    if r.parts_kept_for_build {
        crate::outln!(
            "kept the base trees and kernels: an image build is running (prune again after it)"
        )?;
    }
    crate::outln!(
        "{verb} {} image(s), {} snapshot(s), {} other folder(s): {}",
        r.images.len(),
        r.snapshots.len(),
        r.other.len(),
        mib(r.freed_bytes)
    )?;
    Ok(ExitCode::SUCCESS)
}
