//! What every VM test binary shares: finding (or building) the guest image to boot, the
//! opt-in switch, one lock so that boots run one at a time, and running a command through a
//! VM's agent.
//!
//! Without `FIREBREAK_VM_TESTS=1` the VM tests print SKIPPED and pass. With it (as
//! `scripts/test` sets after building the image) a missing tool or image fails them.

#![allow(dead_code)]

use std::path::PathBuf;

use firebreak_vm::image::{Image, ImageSpec, ImageStore, KernelKind};
use firebreak_vm::tools;

pub mod procs;

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `spec` in the VM to completion: stdout, stderr, exit status.
pub async fn exec_collect(
    client: &firebreak_agent::AgentClient,
    spec: firebreak_agent::ExecSpec,
) -> (Vec<u8>, Vec<u8>, firebreak_agent::ExitStatus) {
    client
        .exec(spec)
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect")
}

pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FIREBREAK_AGENT") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/firebreak-agent")
}

/// True when VM tests were asked for (`FIREBREAK_VM_TESTS=1`): they must not skip.
pub fn required() -> bool {
    std::env::var_os("FIREBREAK_VM_TESTS").is_some_and(|v| v == "1")
}

/// The image to test with, or why the test is skipped.
pub fn test_image() -> Result<Image, String> {
    if !required() {
        return Err(
            "VM tests are opt-in: set FIREBREAK_VM_TESTS=1 (each boots QEMU; minutes under TCG)"
                .into(),
        );
    }
    for t in tools::QEMU_TOOLS {
        if tools::find(t.name).is_none() {
            return Err(format!(
                "{} missing (apt-get install {})",
                t.name, t.package
            ));
        }
    }
    let store = ImageStore::open_default();
    let agent = agent_binary();
    // `FIREBREAK_TEST_KERNEL=minimal`: the image with the kernel built from source.
    let kernel = match std::env::var("FIREBREAK_TEST_KERNEL").as_deref() {
        Ok("minimal") => KernelKind::Minimal,
        _ => KernelKind::Package,
    };
    let spec = ImageSpec::new(&agent).with_kernel(kernel);
    if agent.is_file() {
        if let Ok(hash) = store.hash_of(&spec) {
            if let Ok(Some(img)) = store.get(&hash) {
                return Ok(img);
            }
        }
        if std::env::var_os("FIREBREAK_TEST_BUILD_IMAGE").is_some_and(|v| v == "1") {
            eprintln!(
                "building the guest image for {} (FIREBREAK_TEST_BUILD_IMAGE=1)…",
                agent.display()
            );
            return store
                .build(&spec, &mut |ev| eprintln!("  {ev:?}"))
                .map_err(|e| e.to_string());
        }
    }
    // Otherwise the newest image with the asked-for kernel, never one with the other kernel.
    let newest = store.list().map_err(|e| e.to_string())?;
    newest
        .into_iter()
        .find(|i| i.manifest.kernel == kernel)
        .ok_or_else(|| {
            format!(
                "no image with the {kernel:?} kernel in {} (or set FIREBREAK_TEST_BUILD_IMAGE=1 with a static agent at {})",
                store.images_dir().display(),
                agent.display()
            )
        })
}

#[macro_export]
macro_rules! image_or_skip {
    () => {
        match $crate::common::test_image() {
            Ok(img) => img,
            Err(why) => {
                if $crate::common::required() {
                    panic!("FIREBREAK_VM_TESTS=1 but no VM can be booted: {why}");
                }
                eprintln!("SKIPPED: no VM test possible here: {why}");
                return;
            }
        }
    };
}
