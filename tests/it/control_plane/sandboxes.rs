//! Several sandbox nodes behind the control plane: jobs placed on the node with the
//! fewest outstanding jobs, every call about a job routed to the node that holds it,
//! and a node killed mid-run: out of rotation, its queued jobs moved to the other node
//! under their ids and finished there.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::real::{free_port, runtime_dir};
use super::*;
use crate::sandbox::bounds::{SPIN, printer};
use crate::support::{Daemon, TestDir, client, eventually};

/// A control plane and two sandboxes of one slot each, so queues form.
struct TwoSandboxes {
    cp: Cp,
    a: Daemon,
    b: Daemon,
}

impl TwoSandboxes {
    async fn start(dir: &TestDir) -> Self {
        let mut text = format!(
            r#"[regions.local]

[latency]
enabled = false

[[nodes]]
name = "control"
role = "control-plane"
region = "local"
listen = "127.0.0.1:{}"
"#,
            free_port()
        );
        for name in ["sandbox-a", "sandbox-b"] {
            text.push_str(&format!(
                "\n[[nodes]]\nname = \"{name}\"\nrole = \"sandbox\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n"
            ));
        }
        text.push_str(&format!(
            r#"
[sandbox]
max_concurrent_jobs = 1
queue_length = 16

[[control_plane.tokens]]
name = "ops"
role = "operator"
token = "{OPERATOR}"

[[control_plane.tokens]]
name = "jobs"
role = "submitter"
token = "{SUBMITTER}"
"#
        ));
        let cp = Cp::start(dir, &text);
        let start = |name| {
            Daemon::start_with(
                "sandbox",
                &cp.config,
                name,
                &["api"],
                &[("EDGEBOX_RUNTIME_DIR", &runtime_dir())],
            )
        };
        let (a, b) = (start("sandbox-a"), start("sandbox-b"));
        let fleet = Self { cp, a, b };
        eventually(
            "both sandboxes in rotation",
            Duration::from_secs(30),
            || async {
                let sandboxes = fleet.sandboxes().await;
                (sandboxes["sandbox-a"]["up"] == true
                    && sandboxes["sandbox-b"]["up"] == true
                    && sandboxes["sandbox-a"]["jobs"].is_object()
                    && sandboxes["sandbox-b"]["jobs"]["queued"] == 0)
                    .then_some(())
            },
        )
        .await;
        fleet
    }

    /// `/v1/stats`' `sandboxes`.
    async fn sandboxes(&self) -> Value {
        let (status, stats) = self.cp.get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        stats["sandboxes"].clone()
    }

    /// Submits through the control plane; the job's id.
    async fn submit(&self, job: Value) -> String {
        let (status, accepted) = self
            .cp
            .call(Method::POST, "/v1/jobs", Some(SUBMITTER), Some(job))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        accepted["id"].as_str().unwrap().to_owned()
    }

    /// Submits straight to a sandbox (as a submitter may), bypassing the relay.
    async fn submit_to(&self, sandbox: &Daemon, job: Value) -> String {
        let response = client()
            .post(format!("{}/v1/jobs", sandbox.url("api")))
            .bearer_auth(SUBMITTER)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.unwrap();
        accepted["id"].as_str().unwrap().to_owned()
    }

    /// Whether `sandbox` itself holds job `id`.
    async fn holds(&self, sandbox: &Daemon, id: &str) -> bool {
        let response = client()
            .get(format!("{}/v1/jobs/{id}", sandbox.url("api")))
            .bearer_auth(SUBMITTER)
            .send()
            .await
            .unwrap();
        response.status() == StatusCode::OK
    }

    /// Job `id` through the control plane.
    async fn job(&self, id: &str) -> (StatusCode, Value) {
        self.cp
            .call(
                Method::GET,
                &format!("/v1/jobs/{id}"),
                Some(SUBMITTER),
                None,
            )
            .await
    }

    /// Waits until job `id` (through the control plane) is in a final state.
    async fn finished(&self, id: &str) -> Value {
        eventually(
            &format!("job {id} finished"),
            Duration::from_secs(60),
            || async {
                let (status, view) = self.job(id).await;
                (status == StatusCode::OK
                    && !matches!(view["state"].as_str(), Some("queued" | "running")))
                .then_some(view)
            },
        )
        .await
    }
}

fn short() -> Value {
    json!({"language": "wat", "source": printer(1, 3)})
}

fn blocker() -> Value {
    json!({"language": "wat", "source": SPIN, "limits": {"wall_ms": 60_000, "cpu_ms": 60_000}})
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_go_to_the_sandbox_with_the_fewest_outstanding_jobs() {
    let dir = TestDir::new();
    let fleet = TwoSandboxes::start(&dir).await;

    // Only the control plane names jobs: a submitter may not, and a bad name is refused.
    let named = |credential: String, id: &str| {
        client()
            .post(format!("{}/v1/jobs", fleet.a.url("api")))
            .bearer_auth(credential)
            .header("x-edgebox-job-id", id)
            .json(&short())
            .send()
    };
    let response = named(SUBMITTER.to_owned(), "mine").await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = named(fleet.a.credential(), "../x").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_job_id");

    // Sandbox A gets three jobs behind the relay's back: one runs, two wait.
    let mut blockers = Vec::new();
    for _ in 0..3 {
        blockers.push(fleet.submit_to(&fleet.a, blocker()).await);
    }
    eventually(
        "the relay saw sandbox A's load",
        Duration::from_secs(10),
        || async {
            let sandboxes = fleet.sandboxes().await;
            (sandboxes["sandbox-a"]["outstanding"] == 3).then_some(())
        },
    )
    .await;

    // Two new jobs through the control plane both go to B (in turn, one would go to
    // A and wait behind its blockers), and finish there while A is still busy.
    let ids = [fleet.submit(short()).await, fleet.submit(short()).await];
    for id in &ids {
        let view = fleet.finished(id).await;
        assert_eq!(view["state"], "succeeded", "{view}");
        assert_eq!(view["stdout"], "xxx");
        assert!(fleet.holds(&fleet.b, id).await, "job {id} ran on B");
        assert!(!fleet.holds(&fleet.a, id).await);
    }
    let sandboxes = fleet.sandboxes().await;
    assert_eq!(sandboxes["sandbox-b"]["placed"], 2, "{sandboxes}");
    assert_eq!(sandboxes["sandbox-a"]["placed"], 0, "{sandboxes}");
    assert_eq!(sandboxes["sandbox-a"]["jobs"]["running"], 1, "{sandboxes}");
    assert_eq!(sandboxes["sandbox-a"]["jobs"]["queued"], 2, "{sandboxes}");

    // A's jobs, cancelled through the control plane: it finds the node holding them
    // (this relay did not place them).
    for id in &blockers {
        let (status, view) = fleet
            .cp
            .call(
                Method::DELETE,
                &format!("/v1/jobs/{id}"),
                Some(SUBMITTER),
                None,
            )
            .await;
        assert_eq!(
            (status, view["state"].clone()),
            (StatusCode::OK, json!("cancelled"))
        );
    }

    // Both idle again: a burst of jobs is shared between them, and each job answers
    // through the control plane from the node it went to.
    eventually("both idle", Duration::from_secs(10), || async {
        let sandboxes = fleet.sandboxes().await;
        (sandboxes["sandbox-a"]["outstanding"] == 0 && sandboxes["sandbox-b"]["outstanding"] == 0)
            .then_some(())
    })
    .await;
    let mut burst = Vec::new();
    for _ in 0..6 {
        burst.push(fleet.submit(short()).await);
    }
    let (mut on_a, mut on_b) = (0, 0);
    for id in &burst {
        assert_eq!(fleet.finished(id).await["state"], "succeeded");
        match (
            fleet.holds(&fleet.a, id).await,
            fleet.holds(&fleet.b, id).await,
        ) {
            (true, false) => on_a += 1,
            (false, true) => on_b += 1,
            other => panic!("job {id} on A and B: {other:?}"),
        }
    }
    assert!(
        on_a >= 2 && on_b >= 2,
        "6 jobs on idle nodes: {on_a} on A, {on_b} on B"
    );
    let (status, stats) = fleet.cp.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats["jobs"]["succeeded"], 8,
        "summed over the nodes: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sandbox_leaves_the_rotation_and_its_queued_jobs_finish_elsewhere() {
    let dir = TestDir::new();
    let mut fleet = TwoSandboxes::start(&dir).await;

    // One long job on each node, then six short ones queued behind them, three each.
    let blockers = [fleet.submit(blocker()).await, fleet.submit(blocker()).await];
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(fleet.submit(short()).await);
    }
    let mut on_b = Vec::new();
    for id in &queued {
        if fleet.holds(&fleet.b, id).await {
            on_b.push(id.clone());
        }
    }
    // Least outstanding alternates between equal nodes (a poll landing amid the
    // burst may shift one job).
    assert!(
        (2..=4).contains(&on_b.len()),
        "{} of 6 queued jobs on B",
        on_b.len()
    );
    let moved = on_b.len() as u64;
    let (blocker_a, blocker_b) = if fleet.holds(&fleet.a, &blockers[0]).await {
        (blockers[0].clone(), blockers[1].clone())
    } else {
        (blockers[1].clone(), blockers[0].clone())
    };
    assert!(fleet.holds(&fleet.b, &blocker_b).await);
    // Wait for a poll that saw B's queue, so the relay knows those jobs have not started.
    eventually("B's queue seen", Duration::from_secs(10), || async {
        (fleet.sandboxes().await["sandbox-b"]["queued"] == moved).then_some(())
    })
    .await;

    fleet.b.kill();
    let sandboxes = eventually(
        "B out of rotation, its queued jobs moved",
        Duration::from_secs(10),
        || async {
            let sandboxes = fleet.sandboxes().await;
            (sandboxes["sandbox-b"]["up"] == false && sandboxes["sandbox-b"]["moved_away"] == moved)
                .then_some(sandboxes)
        },
    )
    .await;
    assert!(
        sandboxes["sandbox-b"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{sandboxes}"
    );

    // A frees its slot; every queued job, B's three included (under the ids their
    // client has), finishes on A.
    let (status, _) = fleet
        .cp
        .call(
            Method::DELETE,
            &format!("/v1/jobs/{blocker_a}"),
            Some(SUBMITTER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for id in &queued {
        let view = fleet.finished(id).await;
        assert_eq!(view["state"], "succeeded", "{view}");
        assert_eq!(view["id"], id.as_str());
        assert!(fleet.holds(&fleet.a, id).await);
    }
    // The job that was running on B is lost with it: a clear 502, not a hang.
    let (status, body) = fleet.job(&blocker_b).await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "sandbox_down");

    // New jobs go to A only.
    let id = fleet.submit(short()).await;
    assert_eq!(fleet.finished(&id).await["state"], "succeeded");
    let sandboxes = fleet.sandboxes().await;
    assert_eq!(sandboxes["sandbox-a"]["up"], true, "{sandboxes}");
    assert_eq!(sandboxes["sandbox-b"]["up"], false, "{sandboxes}");
}
