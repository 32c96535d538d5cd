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
use firebreak_vm::image::{locate_agent, BuildEvent};
use firebreak_vm::{ImageSpec, ImageStore, KernelKind};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{style, Format};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the default guest image (or find it in the cache). Needs root, debootstrap,
    /// e2fsprogs, busybox-static, lz4 and a static firebreak-agent; the first build takes
    /// minutes.
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
    /// List built images, newest first.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove all but the newest images.
    Prune {
        /// How many images to keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
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
        ImageCommand::List { format } => list(&store, *format),
        ImageCommand::Prune { keep } => {
            let report = store.prune(*keep)?;
            crate::outln!(
                "removed {} image(s), freed {:.1} MiB",
                report.removed.len(),
                report.freed_bytes as f64 / (1024.0 * 1024.0)
            )?;
            Ok(ExitCode::SUCCESS)
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

fn list(store: &ImageStore, format: Format) -> Result<ExitCode> {
    let images = store.list()?;
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = images
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "dir": i.dir.display().to_string(),
                        "manifest": i.manifest,
                        "disk_bytes": i.disk_usage(),
                    })
                })
                .collect();
            crate::outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        }
        Format::Text => {
            if images.is_empty() {
                crate::outln!("no images yet: build one with `firebreak image build`")?;
            }
            for i in &images {
                let m = &i.manifest;
                crate::outln!(
                    "{}  {}  kernel {}  {:.0} MiB on disk  {}",
                    style::bold(&m.hash),
                    m.suite,
                    m.kernel_release,
                    i.disk_usage() as f64 / (1024.0 * 1024.0),
                    style::dim(&i.dir.display().to_string())
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
