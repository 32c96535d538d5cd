//! Running a local process for the host and namespace backends: spawn in its
//! own process group, stream lines, enforce timeout/cancellation by killing the
//! whole tree.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{ExitStatus, OutputEvent, SandboxError, Stream, MAX_LINE_BYTES};

/// What to do after spawning.
pub(crate) struct Supervise {
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel: Option<tokio_util::sync::CancellationToken>,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) drain_grace: Duration,
    /// SIGINT, then SIGTERM, to the main process before the tree is killed.
    pub(crate) interrupt_first: bool,
    /// Kills the tree at once, also during the SIGINT/SIGTERM graces.
    pub(crate) kill: Option<tokio_util::sync::CancellationToken>,
}

/// Spawns `cmd` (already configured with program, args, env, cwd) in a new
/// process group and supervises it.
pub(crate) async fn run(
    mut cmd: Command,
    program: &str,
    sup: Supervise,
    output: mpsc::Sender<OutputEvent>,
) -> Result<ExitStatus, SandboxError> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if sup.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(true);
    // `bwrap --die-with-parent` dies with the thread that starts it: see `crate::spawn`.
    let mut child =
        crate::spawn::spawn_from_stable_thread(cmd).map_err(|source| SandboxError::Spawn {
            program: program.to_string(),
            source,
        })?;
    let pid = child.id();

    if let (Some(data), Some(mut stdin)) = (sup.stdin, child.stdin.take()) {
        // Write in the background so a process that never reads cannot block us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }

    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, Stream::Stdout, output.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, Stream::Stderr, output.clone())));
    }
    drop(output);

    let cancel = super::cancelled(sup.cancel.as_ref());
    let timed_out = async {
        match sup.timeout {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };

    let killed = super::cancelled(sup.kill.as_ref());
    let status = tokio::select! {
        res = child.wait() => {
            let st = res.map_err(|e| SandboxError::io("wait for", program, e))?;
            Some(st)
        }
        _ = cancel => None,
        _ = timed_out => None,
        _ = killed => None,
    };

    let result = match status {
        Some(st) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => ExitStatus::Exited(c),
                (None, Some(s)) => ExitStatus::Signaled(s),
                (None, None) => ExitStatus::Exited(-1),
            }
        }
        None => {
            let why = if sup.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
                ExitStatus::Cancelled
            } else {
                ExitStatus::TimedOut
            };
            let kill_now = sup.kill.as_ref().is_some_and(|t| t.is_cancelled());
            let mut reaped = false;
            let mut others = Vec::new();
            let root = pid.and_then(|p| i32::try_from(p).ok());
            if let (Some(root), true, false) = (root, sup.interrupt_first, kill_now) {
                // One look at the process table: what the command started, noted before it
                // is signalled (once it has exited, processes that left its group are no
                // longer found below it), and the process to signal.
                let tree = process_tree();
                others = descendants_in(&tree, root)
                    .into_iter()
                    .filter_map(|p| Some((p, start_time(p)?)))
                    .collect();
                if let Some(main) = main_process(&tree, root) {
                    reaped = ask_to_stop(main, &mut child, sup.kill.as_ref()).await;
                }
            }
            if let Some(pid) = pid {
                if reaped {
                    // Its pid may be another process's by now: only its group and what
                    // it started are killed.
                    kill_group_and(pid, &others);
                } else {
                    kill_tree(pid);
                }
            }
            let _ = child.kill().await;
            let _ = child.wait().await;
            why
        }
    };

    // Let the readers finish; background processes may hold the pipes open.
    let grace = match result {
        ExitStatus::TimedOut | ExitStatus::Cancelled => Duration::from_millis(200),
        _ => sup.drain_grace,
    };
    let deadline = tokio::time::Instant::now() + grace;
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout_at(deadline, r).await.is_err() {
            abort.abort();
        }
    }
    Ok(result)
}

/// Reads `src` line by line and forwards each line.
async fn pump<R: AsyncRead + Unpin>(src: R, stream: Stream, out: mpsc::Sender<OutputEvent>) {
    let mut reader = BufReader::with_capacity(64 * 1024, src);
    let mut buf = Vec::with_capacity(1024);
    let mut receiver_gone = false;
    loop {
        buf.clear();
        let n = match read_line_capped(&mut reader, &mut buf).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        if receiver_gone {
            continue;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        if out.send(OutputEvent { stream, line }).await.is_err() {
            receiver_gone = true;
        }
    }
}

/// Like `read_until(b'\n')` but stops after [`MAX_LINE_BYTES`].
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        let window = &available[..available.len().min(room)];
        if let Some(i) = window.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&window[..=i]);
            r.consume(i + 1);
            return Ok(total + i + 1);
        }
        let n = window.len();
        buf.extend_from_slice(window);
        r.consume(n);
        total += n;
        if buf.len() >= MAX_LINE_BYTES {
            return Ok(total);
        }
    }
}

/// GitHub's runner's way to stop a step: SIGINT to its main process, [`super::INTERRUPT_GRACE`]
/// to exit, then SIGTERM and [`super::TERMINATE_GRACE`]. Returns when the process has exited (true:
/// it has been reaped), the time is up or `kill` is cancelled (false; the caller then kills
/// the tree).
async fn ask_to_stop(
    main: i32,
    child: &mut tokio::process::Child,
    kill_now: Option<&tokio_util::sync::CancellationToken>,
) -> bool {
    for (signal, grace) in [
        (Signal::SIGINT, super::INTERRUPT_GRACE),
        (Signal::SIGTERM, super::TERMINATE_GRACE),
    ] {
        if kill(Pid::from_raw(main), signal).is_err() {
            return false;
        }
        let killed = super::cancelled(kill_now);
        tokio::select! {
            r = tokio::time::timeout(grace, child.wait()) => {
                if r.is_ok() {
                    return true;
                }
            }
            () = killed => return false,
        }
    }
    false
}

/// Kills the process group `pid` led and the processes in `others` that are still the ones
/// noted (pid and start time: pids are reused), after its leader was reaped, when `pid`
/// itself may name another process.
fn kill_group_and(pid: u32, others: &[(i32, u64)]) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
    for (d, started) in others {
        if start_time(*d) == Some(*started) {
            let _ = kill(Pid::from_raw(*d), Signal::SIGKILL);
        }
    }
}

/// When process `pid` started (clock ticks since boot, `/proc/PID/stat` field 22).
fn start_time(pid: i32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// The process a command runs as: the child itself, or under the namespace sandbox the
/// first process below `bwrap` (the sandbox's own processes are not the command).
fn main_process(tree: &ProcessTree, pid: i32) -> Option<i32> {
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    if comm(pid).trim() != "bwrap" {
        return Some(pid);
    }
    // Breadth-first: bwrap's own helper comes before the command it starts.
    let mut level = vec![pid];
    while !level.is_empty() {
        let mut next = Vec::new();
        for p in level {
            for &c in tree.get(&p).into_iter().flatten() {
                if comm(c).trim() != "bwrap" {
                    return Some(c);
                }
                next.push(c);
            }
        }
        level = next;
    }
    None
}

/// SIGKILLs `pid`, its process group, and every descendant found in /proc
/// (descendants that moved to another session or group included).
pub(crate) fn kill_tree(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let root = Pid::from_raw(raw);
    // Stop the group first so nothing forks while we walk /proc.
    let _ = killpg(root, Signal::SIGSTOP);
    let descendants = descendants_of(raw);
    let _ = killpg(root, Signal::SIGKILL);
    let _ = kill(root, Signal::SIGKILL);
    for d in descendants {
        let p = Pid::from_raw(d);
        let _ = kill(p, Signal::SIGKILL);
        let _ = killpg(p, Signal::SIGKILL);
    }
}

/// Every process whose ancestry leads to `root`, from /proc.
pub(crate) fn descendants_of(root: i32) -> Vec<i32> {
    descendants_in(&process_tree(), root)
}

/// Each process's children, from one pass over /proc.
type ProcessTree = HashMap<i32, Vec<i32>>;

fn process_tree() -> ProcessTree {
    let mut children: ProcessTree = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_pid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    children
}

/// Every process below `root` in `tree`.
fn descendants_in(tree: &ProcessTree, root: i32) -> Vec<i32> {
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(p) = stack.pop() {
        if let Some(kids) = tree.get(&p) {
            for k in kids {
                if seen.insert(*k) {
                    out.push(*k);
                    stack.push(*k);
                }
            }
        }
    }
    out
}

fn parent_pid(pid: i32) -> Option<i32> {
    stat_field(pid, 4)?.parse().ok()
}

/// Field `n` (1-based, as proc(5) numbers them; from 3 on) of `/proc/PID/stat`.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip past it.
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

/// PIDs whose environment contains `key=value` exactly (used to find what a
/// job left running on the host, like GitHub's RUNNER_TRACKING_ID).
pub(crate) fn pids_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if u32::try_from(pid).ok() == Some(me) {
                continue;
            }
            if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
                if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// SIGKILLs every process carrying `key=value` in its environment.
pub(crate) fn kill_tracked(key: &str, value: &str) -> usize {
    let pids = pids_with_env(key, value);
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_start_time_tells_a_reused_pid_apart() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let t = super::start_time(me).expect("own start time");
        assert_eq!(super::start_time(me), Some(t), "stable");
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = i32::try_from(child.id()).expect("pid");
        let _ = child.wait();
        assert_eq!(super::start_time(pid), None, "gone once reaped");
    }

    use super::*;

    #[tokio::test]
    async fn capped_reader_splits_long_lines() {
        let mut data = vec![b'a'; MAX_LINE_BYTES + 10];
        data.push(b'\n');
        let mut r = BufReader::new(&data[..]);
        let mut buf = Vec::new();
        let n = read_line_capped(&mut r, &mut buf).await.ok();
        assert_eq!(n, Some(MAX_LINE_BYTES));
        buf.clear();
        let n = read_line_capped(&mut r, &mut buf).await.ok();
        assert_eq!(n, Some(11));
        assert_eq!(buf.last(), Some(&b'\n'));
    }

    #[test]
    fn parent_of_self_is_known() {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        assert!(parent_pid(me).is_some());
    }
}
