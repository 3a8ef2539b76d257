//! Following etcd: one task per replica reads the whole state when it (re)connects,
//! then applies etcd's watch events to this replica's view (current version, history,
//! node reports), probing etcd every second so that an etcd that stops answering is
//! noticed even when nothing changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{AppState, Backend, Replica};
use crate::etcd::EtcdError;
use crate::etcd_store::Change;

const PROBE_EVERY: Duration = Duration::from_secs(1);

impl AppState {
    fn replica(&self) -> &Replica {
        match &self.backend {
            Backend::Etcd(replica) => replica,
            Backend::File(_) => unreachable!("only an etcd-backed control plane follows etcd"),
        }
    }

    /// Reads everything from etcd into this replica's view; returns the revision to
    /// watch after. An empty etcd gets the start-up file as version 1.
    pub(super) async fn resync(&self) -> Result<i64, EtcdError> {
        let replica = self.replica();
        let loaded = replica.store.load().await?;
        self.store_up();
        *replica.history.lock().expect("history lock") = loaded
            .history
            .iter()
            .map(|meta| (meta.version, meta.clone()))
            .collect();
        {
            let mut reports = self.reports.lock().expect("reports lock");
            for (node, report) in loaded.reports {
                reports.insert(node, report);
            }
        }
        self.invalidate_listing();
        match loaded.current {
            Some(stored) => {
                self.adopt(stored.meta, stored.text, stored.revision);
            }
            None if self.current().meta.version == 0 => {
                let started = Arc::clone(&self.started_with);
                match self
                    .apply(&started.text, format!("startup {}", started.source), None)
                    .await
                {
                    Ok(applied) => tracing::info!(
                        version = applied.version,
                        "adopted the start-up config into etcd"
                    ),
                    Err(error) => {
                        tracing::error!(error = %error.message, "could not store the start-up config in etcd")
                    }
                }
            }
            None => tracing::error!(
                version = self.current().meta.version,
                "etcd has no current config version (was it wiped?); keeping this replica's view"
            ),
        }
        Ok(loaded.revision)
    }

    /// Runs until shutdown: watch, and on any failure mark the store down, back off,
    /// read everything again and watch from there.
    pub(super) async fn follow_etcd(self: Arc<Self>, mut revision: Option<i64>) {
        let mut backoff =
            edgebox_node::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let outcome = match revision.take() {
                Some(revision) => {
                    self.store_up();
                    self.watch_from(revision + 1, &mut backoff).await
                }
                None => match self.resync().await {
                    Ok(revision) => {
                        self.store_up();
                        self.watch_from(revision + 1, &mut backoff).await
                    }
                    Err(error) => Err(error),
                },
            };
            match outcome {
                Ok(()) => return, // shutdown
                Err(error) => self.store_down(error.to_string()),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn watch_from(
        &self,
        from: i64,
        backoff: &mut edgebox_node::backoff::Backoff,
    ) -> Result<(), EtcdError> {
        let replica = self.replica();
        let mut watch = replica.store.watch(from).await?;
        backoff.reset();
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = watch.next() => self.apply_events(batch?).await?,
                _ = probe.tick() => {
                    replica.store.probe().await?;
                    self.store_up();
                }
                () = self.shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Applies one revision's events: a new version arrives as its metadata, text and
    /// pointer together.
    async fn apply_events(&self, events: Vec<crate::etcd::Event>) -> Result<(), EtcdError> {
        let replica = self.replica();
        let mut texts = BTreeMap::new();
        let mut pointer = None;
        for event in &events {
            match replica.store.change(event) {
                Some(Change::Meta(meta)) => {
                    replica
                        .history
                        .lock()
                        .expect("history lock")
                        .insert(meta.version, meta);
                }
                Some(Change::Text(version, text)) => {
                    texts.insert(version, text);
                }
                Some(Change::Current { version, revision }) => pointer = Some((version, revision)),
                Some(Change::Report(node, report)) => self.record_report_locally(node, report),
                Some(Change::ReportGone(node)) => {
                    self.reports.lock().expect("reports lock").remove(&node);
                    self.invalidate_listing();
                }
                None => {}
            }
        }
        if let Some((version, revision)) = pointer {
            let known = replica
                .history
                .lock()
                .expect("history lock")
                .get(&version)
                .cloned();
            let meta = match known {
                Some(meta) => meta,
                None => match replica.store.meta(version).await? {
                    Some(meta) => meta,
                    None => {
                        tracing::error!(
                            version,
                            "etcd's current pointer names a version without metadata"
                        );
                        return Ok(());
                    }
                },
            };
            let text = match texts.remove(&version) {
                Some(text) => text,
                None => match replica.store.text(version).await? {
                    Some(text) => text,
                    None => {
                        tracing::error!(
                            version,
                            "etcd's current pointer names a version without text"
                        );
                        return Ok(());
                    }
                },
            };
            self.adopt(meta, text, revision);
        }
        Ok(())
    }
}
