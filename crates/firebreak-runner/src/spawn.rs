//! Starting the processes that must die with the runner (VMMs, `bwrap` sandboxes) from one
//! thread that lives as long as the process.
//!
//! They ask the kernel to kill them when their parent goes (`setpriv --pdeathsig KILL`,
//! `bwrap --die-with-parent`): `PR_SET_PDEATHSIG`, whose "parent" is the *thread* that forked
//! them, not the process. A tokio worker that runs `block_in_place` (`hashFiles` in a microVM
//! job does) is turned into a blocking-pool thread, which exits after 10 s idle, and every
//! process it had started was then killed with it: a long job's VM died in mid-step with
//! nothing in its logs. Spawned from this thread, such a process dies only with the runner.

use std::sync::mpsc;
use std::sync::OnceLock;

type Job = (
    tokio::process::Command,
    tokio::runtime::Handle,
    mpsc::SyncSender<std::io::Result<tokio::process::Child>>,
);

/// Spawns `cmd` from the process's long-lived spawner thread, inside the calling task's
/// runtime (which reaps the child). Must be called from within a tokio runtime.
pub fn spawn_from_stable_thread(
    cmd: tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    // `Sender` is `Sync`: every caller sends on the one sender.
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| std::io::Error::other(format!("no tokio runtime to spawn in: {e}")))?;
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("firebreak-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in rx {
                    let _runtime = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            eprintln!("firebreak: no spawner thread ({e}); processes start from their callers");
        }
        tx
    });
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let sent = tx.send((cmd, handle, reply_tx));
    match sent {
        Ok(()) => reply_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone"))),
        // No spawner thread: start it here, as before.
        Err(mpsc::SendError((mut cmd, _, _))) => cmd.spawn(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that asks to die with its parent thread outlives the thread that asked for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_outlives_the_thread_that_asked_for_it() {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: setpriv (util-linux) is not installed");
            return;
        }
        let child = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _g = rt.enter();
            let mut cmd = tokio::process::Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "--", "sleep", "30"])
                .kill_on_drop(true);
            let child = spawn_from_stable_thread(cmd).expect("spawn");
            let pid = child.id().expect("pid");
            // Long enough for setpriv to set its pdeathsig (and exec sleep) while this thread
            // is still its parent.
            std::thread::sleep(std::time::Duration::from_millis(300));
            // The child is reaped by no one once this runtime is gone: keep it from being
            // killed on drop, and hand its pid out.
            std::mem::forget(child);
            pid
        })
        .join()
        .expect("thread");
        // The thread that asked is gone; give a pdeathsig time to arrive.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let alive = std::path::Path::new(&format!("/proc/{child}")).exists()
            && !std::fs::read_to_string(format!("/proc/{child}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child as i32),
            nix::sys::signal::SIGKILL,
        );
        assert!(alive, "the child died with the thread that asked for it");
    }
}
