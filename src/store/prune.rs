//! The retention pruner (`--response-retention`): one `wick-prune` thread that deletes the
//! stored responses created, and the conversations last changed, longer ago than the
//! retention, once at start and then every `every`. A failed prune is logged and tried again
//! at the next tick; it never reaches a request. Dropping the [`Pruner`] stops the thread at
//! once (it waits on a channel, not a sleep).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ResponseStore;

/// How often the server prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(5 * 60);

/// The running pruner; dropping it stops and joins the thread.
pub struct Pruner {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner").finish_non_exhaustive()
    }
}

impl Pruner {
    /// Starts pruning `store` of what is older than `retention`, every `every`.
    pub fn start(
        store: ResponseStore,
        retention: Duration,
        every: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wick-prune".into())
            .spawn(move || run(&store, retention, every, &rx))?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &ResponseStore, retention: Duration, every: Duration, stop: &Receiver<()>) {
    loop {
        prune_once(store, retention);
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            // The sender is gone (or said stop): the server is exiting.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One pass: deletes what is older than `retention`, now.
pub fn prune_once(store: &ResponseStore, retention: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cutoff = now.saturating_sub(retention.as_secs().min(i64::MAX as u64) as i64);
    match store.prune(cutoff) {
        Ok(p) if p.responses + p.conversations > 0 => tracing::info!(
            responses = p.responses,
            conversations = p.conversations,
            "pruned stored responses and conversations past their retention"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning stored responses failed; retrying later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{new_id, StoredResponse};

    #[test]
    fn the_pruner_prunes_at_start_and_stops_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ResponseStore::open(&dir.path().join("wick.db")).expect("opens");
        let old = StoredResponse {
            id: new_id("resp_"),
            owner: String::new(),
            created_at: 1_000,
            status: "completed".into(),
            previous_response_id: None,
            conversation_id: None,
            response: serde_json::json!({"output": []}),
            input_items: Vec::new(),
        };
        store.save(&old).expect("saved");
        let t = std::time::Instant::now();
        let pruner = Pruner::start(
            store.clone(),
            Duration::from_secs(86_400),
            Duration::from_secs(3600),
        )
        .expect("starts");
        while store.get("", &old.id).expect("reads").is_some() {
            assert!(t.elapsed() < Duration::from_secs(10), "not pruned at start");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(pruner);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the drop waited for the tick"
        );
    }
}
