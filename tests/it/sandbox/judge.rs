//! Test cases judged in one submission, through the real sandbox: the program is
//! prepared once (the stats counter goes up by one for twenty cases), each case runs in a
//! fresh instance with the job's limits and gets its own verdict, and the events socket
//! says which case runs and reports each verdict as it is reached.

use edgebox_wire::ErrorBody;
use edgebox_wire::sandbox::{CaseResult, JobEvent, JobState, Verdict};
use serde_json::{Value, json};

use super::{Sandbox, result_of};

/// One command per case, read from stdin: each exercises one verdict.
const JUDGED: &str = r#"import sys
cmd, _, arg = input().partition(' ')
if cmd == 'add':
    a, b = map(int, arg.split())
    print(a + b)
elif cmd == 'raise':
    raise ValueError(arg)
elif cmd == 'spin':
    while True:
        pass
elif cmd == 'alloc':
    hog = bytearray(10**9)
elif cmd == 'flood':
    while True:
        print('y' * 1000)
elif cmd == 'exit':
    sys.exit(int(arg))
elif cmd == 'echo':
    print(arg + '   ')
"#;

/// The twenty cases and the verdict each must get.
fn cases() -> Vec<(Value, Verdict)> {
    let mut cases = Vec::new();
    for i in 0..10 {
        cases.push((
            json!({"name": format!("add {i}"), "stdin": format!("add {i} {i}\n"), "expected_stdout": format!("{}\n", 2 * i)}),
            Verdict::Accepted,
        ));
    }
    for i in 0..3 {
        cases.push((
            json!({"stdin": format!("add {i} 1\n"), "expected_stdout": "999\n"}),
            Verdict::WrongAnswer,
        ));
    }
    let mut more = vec![
        (json!({"stdin": "raise boom\n"}), Verdict::RuntimeError),
        (json!({"stdin": "spin\n"}), Verdict::TimedOut),
        (json!({"stdin": "alloc\n"}), Verdict::MemoryExceeded),
        (json!({"stdin": "flood\n"}), Verdict::OutputExceeded),
        (
            json!({"stdin": "exit 3\n", "expected_exit_code": 3}),
            Verdict::Accepted,
        ),
        (json!({"stdin": "exit 4\n"}), Verdict::RuntimeError),
        (
            json!({"stdin": "echo hi\n", "expected_stdout": "hi"}),
            Verdict::Accepted,
        ),
    ];
    cases.append(&mut more);
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_cases_with_mixed_verdicts_prepared_once() {
    let sandbox =
        Sandbox::start_with("max_concurrent_jobs = 2\nqueue_length = 16\nmax_test_cases = 20\n");
    // Fetch and warm the runtime first, so the counter below sees only the judged job.
    sandbox.run(super::python("print(1)")).await;
    let before = sandbox.stats().await.programs_prepared;
    let cases = cases();
    let tests: Vec<Value> = cases.iter().map(|(case, _)| case.clone()).collect();
    let id = sandbox
        .submit(json!({
            "language": "python",
            "source": JUDGED,
            "tests": tests,
            "limits": {"wall_ms": 1500, "cpu_ms": 1500, "memory_mb": 64, "output_bytes": 8192},
        }))
        .await;
    let events = sandbox.events(&id).await;
    assert_eq!(sandbox.stats().await.programs_prepared, before + 1);

    // The socket said which case was running, and reported every verdict in order.
    let running: Vec<u32> = events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Status(status) => status.case.as_ref().map(|case| case.index),
            _ => None,
        })
        .collect();
    assert!(
        running.contains(&14),
        "the spinning case was seen running: {running:?}"
    );
    assert!(running.windows(2).all(|w| w[0] <= w[1]), "{running:?}");
    let streamed: Vec<&CaseResult> = events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Case(case) => Some(case),
            _ => None,
        })
        .collect();
    assert_eq!(streamed.len(), 20);

    let result = result_of(&events);
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    let summary = result.head.tests.as_ref().expect("the judging summary");
    assert_eq!((summary.passed, summary.total), (12, 20), "{summary:#?}");
    assert_eq!(summary.verdict, Some(Verdict::WrongAnswer));
    for (index, ((_, want), got)) in cases.iter().zip(&summary.cases).enumerate() {
        assert_eq!(got.index as usize, index);
        assert_eq!(got.verdict, *want, "case {index}: {got:#?}");
        assert_eq!(streamed[index], got);
    }
    assert_eq!(summary.cases[0].name.as_deref(), Some("add 0"));
    assert_eq!(summary.cases[3].stdout, "6\n");
    let wrong = &summary.cases[10];
    let difference = wrong.difference.as_ref().expect("the first differing line");
    assert_eq!(
        (
            difference.line,
            difference.expected.as_deref(),
            difference.actual.as_deref()
        ),
        (1, Some("999"), Some("1"))
    );
    assert!(summary.cases[13].stderr.contains("ValueError: boom"));
    assert!(
        summary.cases[14].runtime_ms >= 1000,
        "{:?}",
        summary.cases[14]
    );
    assert!(summary.cases[16].truncated);
    assert!(summary.cases[16].stdout.len() <= 8192);
    assert_eq!(summary.cases[17].exit_code, Some(3));
    assert_eq!(summary.cases[18].exit_code, Some(4));

    // The view reads the same.
    let view = sandbox.job(&id).await.expect("the job");
    assert_eq!(view.head.tests.as_ref(), Some(summary));
}

#[tokio::test(flavor = "multi_thread")]
async fn judged_jobs_refuse_bad_cases() {
    let sandbox = Sandbox::start_with(
        "max_concurrent_jobs = 1\nmax_test_cases = 3\nmax_tests_size = \"1KiB\"\nmax_stdin_size = \"512B\"\n",
    );
    let job = |tests: Value| json!({"language": "wat", "source": "(module)", "tests": tests});
    let cases = [
        (job(json!([])), 422, "invalid_tests"),
        (job(json!([{}, {}, {}, {}])), 422, "too_many_tests"),
        (
            job(json!([{"stdin": "x".repeat(600)}])),
            413,
            "stdin_too_large",
        ),
        (
            job(
                json!([{"stdin": "x".repeat(500)}, {"stdin": "x".repeat(500)}, {"expected_stdout": "x".repeat(100)}]),
            ),
            413,
            "tests_too_large",
        ),
        (job(json!([{"args": ["a\u{0}b"]}])), 422, "invalid_args"),
        (
            job(json!([{"stdin": "", "bogus": 1}])),
            422,
            "invalid_request",
        ),
        (
            json!({"language": "wat", "source": "(module)", "tests": [{}], "compare": "fuzzy"}),
            422,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = sandbox.post("/v1/jobs", &body).await;
        assert_eq!(got, status, "{error}");
        let error: ErrorBody = serde_json::from_value(error).expect("the JSON error body");
        assert_eq!(error.error.code, code, "{error:?}");
    }
    // A WAT program judged on tokens: prepared once, run per case.
    let echo = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 256))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let result = sandbox
        .run(json!({
            "language": "wat",
            "source": echo,
            "compare": "tokens",
            "tests": [
                {"stdin": "1  2\n3", "expected_stdout": "1 2 3"},
                {"stdin": "1 2 4", "expected_stdout": "1 2 3"},
            ],
        }))
        .await;
    let summary = result.head.tests.expect("summary");
    let verdicts: Vec<Verdict> = summary.cases.iter().map(|case| case.verdict).collect();
    assert_eq!(verdicts, [Verdict::Accepted, Verdict::WrongAnswer]);
    assert_eq!(summary.verdict, Some(Verdict::WrongAnswer));
}

/// Each case is a fresh instance of the prepared image: what one case changes (a
/// module's attribute, `builtins`, `sys.path`, its own globals, an object of the image it
/// mutates in place) no later case sees, whether the cases run one after the other or on
/// two lanes at once.
#[tokio::test(flavor = "multi_thread")]
async fn judged_cases_share_no_state() {
    let sandbox = Sandbox::start_with("max_concurrent_jobs = 1\nmax_parallel_cases = 2\n");
    let program = r#"import sys, json, builtins
seen = [hasattr(sys, 'edgebox_case'), hasattr(json, 'edgebox_case'),
        hasattr(builtins, 'edgebox_case'), 'edgebox_case' in globals(),
        sys.path.count('/edgebox-case'), len(sys.modules['__main__'].__dict__.get('_edgebox_case', []))]
sys.edgebox_case = json.edgebox_case = builtins.edgebox_case = edgebox_case = 1
sys.path.append('/edgebox-case')
sys.modules['__main__'].__dict__.setdefault('_edgebox_case', []).append(input())
print(seen)
"#;
    let tests: Vec<Value> = (0..6)
        .map(|i| json!({"stdin": format!("{i}\n"), "expected_stdout": "[False, False, False, False, 0, 0]\n"}))
        .collect();
    let result = sandbox
        .run(json!({"language": "python", "source": program, "tests": tests}))
        .await;
    let summary = result.head.tests.expect("the judging summary");
    assert_eq!((summary.passed, summary.total), (6, 6), "{summary:#?}");
}

/// Cancelling a judged job stops the case that is running (whatever runs its instance)
/// and skips the rest: the cancel's answer already shows the job cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_judged_job_stops_its_running_case() {
    let sandbox = Sandbox::start_with("max_concurrent_jobs = 2\n");
    let tests: Vec<Value> = (0..3).map(|_| json!({"stdin": ""})).collect();
    let id = sandbox
        .submit(json!({
            "language": "python",
            "source": "n = 0\nwhile True:\n    n += 1\n",
            "tests": tests,
            "limits": {"wall_ms": 30000, "cpu_ms": 30000},
        }))
        .await;
    // A case's instance is running once its line is sampled.
    crate::support::eventually(
        "a case to run",
        std::time::Duration::from_secs(60),
        || async {
            let job = sandbox.job(&id).await.expect("the job is known");
            job.head.current_line.is_some().then_some(())
        },
    )
    .await;
    let (status, view) = sandbox.cancel(&id).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], json!("cancelled"), "{view}");
    let job = sandbox.wait(&id).await;
    assert_eq!(job.head.state, JobState::Cancelled, "{job:?}");
    let summary = job.head.tests.expect("the judging summary");
    assert!(summary.cases.len() < 3, "{summary:?}");
}
