//! Job-level `concurrency:` within a run, as GitHub applies it: in a concurrency group at most
//! one job runs and one waits. A job that comes while another waits replaces it (the waiting
//! one is cancelled: "Canceling since a higher priority waiting request for 'G' exists"); with
//! `cancel-in-progress: true` it cancels the running one too. With `queue: max` jobs wait in
//! line instead, first come first served, up to [`MAX_QUEUE`]; one more is cancelled. Group
//! names ignore case (`prod` and `Prod` are one group). Groups are shared by every workflow of
//! a run (GitHub's are the repository's), so two workflows that deploy under one group take
//! turns.
//!
//! A leg asks for its group in matrix order, without waiting ([`Groups::request`]), so that
//! a later leg can replace an earlier waiting one; it then waits for its turn
//! ([`Ticket::wait`]) before it takes its `max-parallel` and run slots, and holds the group
//! ([`Slot`]) until it finishes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How many jobs may wait in a group with `queue: max`.
pub(crate) const MAX_QUEUE: usize = 100;

/// A group's key: its name ignoring case (`prod` and `Prod` are one group).
fn group_key(group: &str) -> String {
    group.to_lowercase()
}

/// Whether two group names name one group.
pub(crate) fn same_group(a: &str, b: &str) -> bool {
    group_key(a) == group_key(b)
}

/// GitHub's message for a job a newer one replaced or cancelled.
pub(crate) fn superseded_message(group: &str) -> String {
    format!("Canceling since a higher priority waiting request for '{group}' exists")
}

/// The run's concurrency groups.
#[derive(Default)]
pub struct Groups {
    inner: Mutex<State>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    running: Option<Holder>,
    /// First in line first; more than one only with `queue: max`.
    waiting: VecDeque<Waiter>,
}

/// What it takes to cancel a job in the group: its token, and what to say first.
struct Holder {
    id: u64,
    cancel: CancellationToken,
    on_cancel: Box<dyn FnOnce() + Send>,
}

struct Waiter {
    holder: Holder,
    wake: oneshot::Sender<bool>,
}

/// A leg's place in a group: running already, or waiting for its turn. Dropped without
/// [`Ticket::wait`] it leaves the group.
pub(crate) struct Ticket {
    place: Option<Place>,
    cancel: CancellationToken,
    turn: Option<oneshot::Receiver<bool>>,
}

struct Place {
    groups: Arc<Groups>,
    group: String,
    id: u64,
}

/// Why a leg does not get its turn.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoTurn {
    /// A newer job of the group replaced it while it waited.
    Superseded,
    /// Its own cancellation (Ctrl-C, fail-fast) came first.
    Cancelled,
}

/// The group, held by a running leg until it is dropped; the waiting leg then runs.
pub(crate) struct Slot(Place);

impl Groups {
    /// Enters `group` for a leg that `cancel` cancels: running at once when the group is
    /// free, else waiting: in place of the legs that waited before (which are told they were
    /// superseded), or with `queue_max` behind them. With `cancel_in_progress` the running
    /// leg is cancelled, after its `on_cancel`; a leg's own `on_cancel` is kept for when a
    /// later one cancels it.
    pub(crate) fn request(
        self: &Arc<Self>,
        group: &str,
        cancel_in_progress: bool,
        queue_max: bool,
        cancel: CancellationToken,
        on_cancel: Box<dyn FnOnce() + Send>,
    ) -> Ticket {
        let key = group_key(group);
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.next_id += 1;
        let id = st.next_id;
        let mut ticket = Ticket {
            place: Some(Place {
                groups: Arc::clone(self),
                group: key.clone(),
                id,
            }),
            cancel: cancel.clone(),
            turn: None,
        };
        let holder = Holder {
            id,
            cancel,
            on_cancel,
        };
        let g = st.groups.entry(key).or_default();
        if g.running.is_none() {
            g.running = Some(holder);
            return ticket;
        }
        let (wake, turn) = oneshot::channel();
        ticket.turn = Some(turn);
        if queue_max && g.waiting.len() >= MAX_QUEUE {
            (holder.on_cancel)();
            let _ = wake.send(false);
            return ticket;
        }
        if !queue_max {
            for old in g.waiting.drain(..) {
                (old.holder.on_cancel)();
                let _ = old.wake.send(false);
            }
        }
        if cancel_in_progress {
            if let Some(r) = g.running.as_mut() {
                let say = std::mem::replace(&mut r.on_cancel, Box::new(|| {}));
                say();
                r.cancel.cancel();
            }
        }
        g.waiting.push_back(Waiter { holder, wake });
        ticket
    }

    /// Frees `group` of the leg `id` (running or waiting); the first waiting leg takes its
    /// place.
    fn leave(&self, group: &str, id: u64) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(g) = st.groups.get_mut(group) else {
            return;
        };
        if let Some(i) = g.waiting.iter().position(|w| w.holder.id == id) {
            g.waiting.remove(i);
        } else if g.running.as_ref().is_some_and(|r| r.id == id) {
            g.running = None;
            if let Some(next) = g.waiting.pop_front() {
                g.running = Some(next.holder);
                let _ = next.wake.send(true);
            }
        }
        if g.running.is_none() && g.waiting.is_empty() {
            st.groups.remove(group);
        }
    }
}

impl Ticket {
    /// A ticket that never gets a turn (a group the leg may not wait for).
    pub(crate) fn refused(cancel: CancellationToken) -> Ticket {
        let (wake, turn) = oneshot::channel();
        let _ = wake.send(false);
        Ticket {
            place: None,
            cancel,
            turn: Some(turn),
        }
    }

    /// Waits for the leg's turn in its group.
    pub(crate) async fn wait(mut self) -> Result<Slot, NoTurn> {
        if let Some(turn) = self.turn.take() {
            let cancel = self.cancel.clone();
            tokio::select! {
                biased;
                got = turn => {
                    if got != Ok(true) {
                        return Err(NoTurn::Superseded);
                    }
                }
                // Dropping the ticket leaves the group (and frees it if the turn came
                // meanwhile).
                _ = cancel.cancelled() => return Err(NoTurn::Cancelled),
            }
        }
        match self.place.take() {
            Some(place) => Ok(Slot(place)),
            None => Err(NoTurn::Cancelled),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(p) = self.place.take() {
            p.groups.leave(&p.group, p.id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.groups.leave(&self.0.group, self.0.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn quiet() -> Box<dyn FnOnce() + Send> {
        Box::new(|| {})
    }

    #[tokio::test]
    async fn one_runs_one_waits_and_a_newer_waiter_replaces_the_older() {
        let groups = Arc::new(Groups::default());
        let told = Arc::new(AtomicUsize::new(0));
        let t = told.clone();
        let first = groups.request("deploy", false, false, CancellationToken::new(), quiet());
        let second = groups.request(
            "deploy",
            false,
            false,
            CancellationToken::new(),
            Box::new(move || {
                t.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let third = groups.request("deploy", false, false, CancellationToken::new(), quiet());
        let running = first.wait().await.expect("the first runs");
        assert_eq!(second.wait().await.err(), Some(NoTurn::Superseded));
        assert_eq!(told.load(Ordering::SeqCst), 1, "the replaced one was told");
        let third = tokio::spawn(third.wait());
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the third waits for the first");
        drop(running);
        let slot = third.await.expect("join").expect("the third runs next");
        drop(slot);
        // Another group is independent, and a freed group is free again.
        assert!(groups
            .request("deploy", false, false, CancellationToken::new(), quiet())
            .wait()
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn cancel_in_progress_cancels_the_running_one() {
        let groups = Arc::new(Groups::default());
        let running_cancel = CancellationToken::new();
        let said = Arc::new(AtomicUsize::new(0));
        let s = said.clone();
        let first = groups
            .request(
                "g",
                false,
                false,
                running_cancel.clone(),
                Box::new(move || {
                    s.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .wait()
            .await
            .expect("runs");
        let second = groups.request("g", true, false, CancellationToken::new(), quiet());
        assert!(running_cancel.is_cancelled());
        assert_eq!(said.load(Ordering::SeqCst), 1);
        let second = tokio::spawn(second.wait());
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "it waits until the cancelled one is done"
        );
        drop(first);
        assert!(second.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn a_waiter_cancelled_leaves_the_group() {
        let groups = Arc::new(Groups::default());
        let first = groups
            .request("g", false, false, CancellationToken::new(), quiet())
            .wait()
            .await
            .expect("runs");
        let cancel = CancellationToken::new();
        let waiting = groups.request("g", false, false, cancel.clone(), quiet());
        cancel.cancel();
        assert_eq!(waiting.wait().await.err(), Some(NoTurn::Cancelled));
        drop(first);
        // Nothing is left behind: the group is free.
        assert!(groups.inner.lock().expect("lock").groups.is_empty());
    }

    #[tokio::test]
    async fn queue_max_waits_in_line_and_names_ignore_case() {
        let groups = Arc::new(Groups::default());
        let first = groups
            .request("Prod", false, true, CancellationToken::new(), quiet())
            .wait()
            .await
            .expect("runs");
        let second = groups.request("prod", false, true, CancellationToken::new(), quiet());
        let third = groups.request("PROD", false, true, CancellationToken::new(), quiet());
        let (second, third) = (tokio::spawn(second.wait()), tokio::spawn(third.wait()));
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished() && !third.is_finished(),
            "both wait, in line"
        );
        drop(first);
        let second = second.await.expect("join").expect("the second runs next");
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the third is behind it");
        drop(second);
        assert!(third.await.expect("join").is_ok());
        // A full line turns one more away.
        let running = groups
            .request("q", false, true, CancellationToken::new(), quiet())
            .wait()
            .await
            .expect("runs");
        let line: Vec<Ticket> = (0..MAX_QUEUE)
            .map(|_| groups.request("q", false, true, CancellationToken::new(), quiet()))
            .collect();
        let extra = groups.request("q", false, true, CancellationToken::new(), quiet());
        assert_eq!(extra.wait().await.err(), Some(NoTurn::Superseded));
        drop(line);
        drop(running);
    }
}
