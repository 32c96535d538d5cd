//! `firebreak doctor`: which sandboxes work on this host, and why not.

use std::process::ExitCode;

use anyhow::Result;
use firebreak_runner::sandbox::{
    HostProvider, NamespaceConfig, NamespaceProvider, SandboxProvider,
};
use serde::Serialize;

use crate::{style, Format};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Skip the KVM probe boot (it takes a few seconds where KVM half-works).
    #[arg(long)]
    no_kvm_probe: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Serialize)]
struct Backend {
    name: String,
    works: bool,
    notes: Vec<String>,
}

pub fn run(args: &DoctorArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scratch = std::env::temp_dir().join(format!("firebreak-doctor-{}", std::process::id()));
    let (mut backends, vm) = rt.block_on(async {
        let mut out = Vec::new();
        let providers: [Box<dyn SandboxProvider>; 2] = [
            Box::new(HostProvider::new(scratch.join("host"))),
            Box::new(NamespaceProvider::new(NamespaceConfig::new(
                scratch.join("ns"),
            ))),
        ];
        for p in &providers {
            let probe = p.probe().await;
            out.push(Backend {
                name: p.name().to_string(),
                works: probe.available,
                notes: probe.notes,
            });
        }
        let opts = firebreak_vm::DoctorOptions {
            probe_kvm: !args.no_kvm_probe,
            wanted_image: crate::cmd::image::wanted_image(),
            ..Default::default()
        };
        (out, firebreak_vm::doctor(&opts).await)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    backends.extend(vm.backends.iter().map(|b| Backend {
        name: b.name.clone(),
        works: b.works,
        notes: b.notes.clone(),
    }));

    match args.format {
        Format::Json => {
            let doc = serde_json::json!({ "backends": backends, "checks": vm.checks });
            crate::outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => {
            crate::outln!("{}", style::bold("Sandboxes"))?;
            for b in &backends {
                let mark = if b.works {
                    style::green("✓")
                } else {
                    style::red("✗")
                };
                crate::outln!("  {mark} {}", b.name)?;
                // A note of several lines (a probe's error output) stays indented.
                for line in b.notes.iter().flat_map(|n| n.lines()) {
                    crate::outln!("      {}", style::dim(line))?;
                }
            }
            crate::outln!("{}", style::bold("Host checks"))?;
            for c in &vm.checks {
                let mark = if c.ok {
                    style::green("✓")
                } else {
                    style::red("✗")
                };
                let mut lines = c.detail.lines();
                crate::outln!("  {mark} {}: {}", c.name, lines.next().unwrap_or_default())?;
                for more in lines {
                    crate::outln!("      {more}")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
