//! The table of jobs the API reads, bounded in total: finished jobs are kept for
//! `keep_finished` at most, and only as many and as large as [`Retention`] allows, the
//! oldest forgotten first. Queued and running jobs are bounded by admission instead
//! (slots plus queue), each by its own output limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgebox_wire::sandbox::{JobState, RetainedStats};

use super::Job;

/// How much finished jobs may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_jobs: usize,
    pub max_bytes: u64,
    pub keep: Duration,
}

impl Retention {
    pub fn from_settings(settings: &edgebox_config::SandboxSettings) -> Self {
        Self {
            max_jobs: settings.max_finished_jobs,
            max_bytes: settings.max_finished_bytes,
            keep: settings.keep_finished,
        }
    }
}

/// A finished job in the order jobs finished.
struct Finished {
    id: String,
    at: Instant,
    bytes: u64,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Arc<Job>>,
    /// Oldest first.
    finished: VecDeque<Finished>,
    finished_bytes: u64,
}

impl Table {
    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.finished.pop_front() {
            self.jobs.remove(&oldest.id);
            self.finished_bytes -= oldest.bytes;
        }
    }
}

/// Every job the daemon knows, by id, with counters per final state.
#[derive(Default)]
pub struct JobTable {
    table: Mutex<Table>,
    finished: Mutex<HashMap<JobState, u64>>,
    pub submitted: AtomicU64,
    pub rejected_busy: AtomicU64,
    /// Finished jobs forgotten before `keep_finished` to stay within the bounds.
    pub evicted: AtomicU64,
}

impl JobTable {
    /// Adds `job`; false (and nothing changed) when its id is taken, which only an id
    /// the control plane chose can cause.
    pub fn insert(&self, job: Arc<Job>) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.jobs.contains_key(&job.id) {
            return false;
        }
        self.submitted.fetch_add(1, Ordering::Relaxed);
        table.jobs.insert(job.id.clone(), job);
        true
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .jobs
            .get(id)
            .cloned()
    }

    /// Counts job `id` as finished in `state` and moves it to the retained ones with
    /// the `bytes` it holds, forgetting the oldest until the bounds hold again. The
    /// `retire` step of [`Job::finish`], once per job.
    pub fn retire(&self, id: &str, state: JobState, bytes: u64, retention: Retention) {
        *self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(state)
            .or_default() += 1;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.jobs.contains_key(id) {
            return; // never inserted, or already forgotten
        }
        table.finished.push_back(Finished {
            id: id.to_owned(),
            at: Instant::now(),
            bytes,
        });
        table.finished_bytes += bytes;
        self.enforce_locked(&mut table, retention);
    }

    /// Forgets finished jobs older than `retention.keep`, and the oldest beyond the
    /// count and byte bounds (after a reload lowered them, say).
    pub fn enforce(&self, retention: Retention) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        while table
            .finished
            .front()
            .is_some_and(|oldest| oldest.at.elapsed() >= retention.keep)
        {
            table.forget_oldest();
        }
        self.enforce_locked(&mut table, retention);
    }

    fn enforce_locked(&self, table: &mut Table, retention: Retention) {
        while table.finished.len() > retention.max_jobs
            || table.finished_bytes > retention.max_bytes
        {
            table.forget_oldest();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Jobs currently in the table, counted by state.
    pub fn counts(&self) -> HashMap<JobState, u64> {
        let mut counts = HashMap::new();
        for job in self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .jobs
            .values()
        {
            *counts.entry(job.state()).or_default() += 1;
        }
        counts
    }

    /// Finished jobs since start, by final state.
    pub fn finished_totals(&self) -> HashMap<JobState, u64> {
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The retained finished jobs against `retention`.
    pub fn retained(&self, retention: Retention) -> RetainedStats {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        RetainedStats {
            jobs: table.finished.len() as u64,
            bytes: table.finished_bytes,
            max_jobs: retention.max_jobs as u64,
            max_bytes: retention.max_bytes,
            evicted_total: self.evicted.load(Ordering::Relaxed),
        }
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .jobs
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{Language, Limits, Outcome, Stream};

    fn job(id: usize, output: usize) -> Arc<Job> {
        let limits = Limits {
            wall_ms: 1,
            cpu_ms: 1,
            memory_mb: 1,
            output_bytes: 1 << 20,
        };
        let job = Arc::new(Job::new(format!("job-{id}"), Language::Wat, limits, false));
        // Alternating small writes, as a chatty guest does: many segments.
        let data = vec![b'x'; output / 2];
        job.push_output(Stream::Stdout, &data[..data.len() / 2]);
        job.push_output(Stream::Stderr, &data);
        job.push_output(Stream::Stdout, &data[data.len() / 2..]);
        job
    }

    fn finish(table: &JobTable, job: &Job, retention: Retention) {
        let outcome = Outcome {
            state: JobState::Succeeded,
            exit_code: Some(0),
            error: None,
        };
        job.finish(outcome, |state, bytes| {
            table.retire(&job.id, state, bytes, retention)
        });
    }

    /// Thousands of jobs at their maximum output: what the table holds stays within the
    /// byte and count bounds, the bound counts (at least) the output really held, and
    /// the newest jobs are the ones kept.
    #[test]
    fn retained_bytes_stay_within_the_budget() {
        let retention = Retention {
            max_jobs: 1000,
            max_bytes: 8 << 20,
            keep: Duration::from_secs(600),
        };
        let table = JobTable::default();
        let output = 300 * 1024; // 150 KiB per stream
        let mut kept = Vec::new();
        for i in 0..2000 {
            let job = job(i, output);
            table.insert(job.clone());
            finish(&table, &job, retention);
            let stats = table.retained(retention);
            assert!(stats.bytes <= retention.max_bytes, "{stats:?}");
            assert!(stats.jobs <= retention.max_jobs as u64, "{stats:?}");
            kept.push(job);
        }
        let stats = table.retained(retention);
        // 8 MiB / ~300 KiB per job: about 27 jobs, the newest ones.
        assert!((20..=28).contains(&stats.jobs), "{stats:?}");
        assert!(
            stats.bytes >= stats.jobs * output as u64,
            "the bound undercounts: {stats:?}"
        );
        assert!(table.get("job-1999").is_some());
        assert!(table.get("job-0").is_none());
        assert_eq!(stats.evicted_total, 2000 - stats.jobs);
        // Only the table's references are gone; the test's own keep the jobs alive.
        drop(kept);
    }

    #[test]
    fn count_bound_and_age_forget_the_oldest_first() {
        let mut retention = Retention {
            max_jobs: 3,
            max_bytes: u64::MAX,
            keep: Duration::from_secs(600),
        };
        let table = JobTable::default();
        let running = job(99, 10);
        table.insert(running.clone());
        for i in 0..5 {
            let job = job(i, 10);
            table.insert(job.clone());
            finish(&table, &job, retention);
        }
        let ids = |table: &JobTable| {
            let mut ids: Vec<String> = table.all().iter().map(|job| job.id.clone()).collect();
            ids.sort();
            ids
        };
        // Running jobs are never forgotten; finished ones beyond three are, oldest first.
        assert_eq!(ids(&table), ["job-2", "job-3", "job-4", "job-99"]);
        retention.max_jobs = 1;
        table.enforce(retention);
        assert_eq!(ids(&table), ["job-4", "job-99"]);
        retention.keep = Duration::ZERO;
        table.enforce(retention);
        assert_eq!(ids(&table), ["job-99"]);
    }
}
