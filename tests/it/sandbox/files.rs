//! Multi-file programs through the real sandbox: a Python package imported by the
//! entry (the live location is the imported file's line), a JavaScript module import,
//! the files read-only under `/app`, and bad file sets refused before anything runs.

use edgebox_wire::ErrorBody;
use edgebox_wire::sandbox::{JobEvent, JobState, SourceLocation};
use serde_json::{Value, json};

use super::{Sandbox, result_of};

#[tokio::test(flavor = "multi_thread")]
async fn python_package_import_reports_the_imported_files_line() {
    let sandbox = Sandbox::start();
    let util = [
        "import time",                       // 1
        "",                                  // 2
        "def double(x):",                    // 3
        "    return 2 * x",                  // 4
        "",                                  // 5
        "def spin():",                       // 6
        "    end = time.monotonic() + 1.0",  // 7
        "    while time.monotonic() < end:", // 8
        "        pass",                      // 9
    ]
    .join("\n");
    let main = [
        "from pkg import util",                              // 1
        "print(util.double(21), flush=True)",                // 2
        "try:",                                              // 3
        "    open('/app/new.txt', 'w')",                     // 4
        "except OSError:",                                   // 5
        "    print('read-only', flush=True)",                // 6
        "util.spin()",                                       // 7
        "print(open('/app/data/input.txt').read().strip())", // 8
    ]
    .join("\n");
    let id = sandbox
        .submit(json!({
            "language": "python",
            "entry": "./main.py",
            "files": [
                {"path": "main.py", "content": main},
                {"path": "pkg/__init__.py", "content": ""},
                {"path": "pkg/util.py", "content": util},
                {"path": "data/input.txt", "content": "aGVsbG8gZmlsZQ==", "encoding": "base64"},
            ],
        }))
        .await;
    let events = sandbox.events(&id).await;
    let locations: Vec<&SourceLocation> = events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Status(status) => status.current_location.as_ref(),
            _ => None,
        })
        .collect();
    let in_util = locations
        .iter()
        .filter(|location| location.path == "pkg/util.py" && (7..=9).contains(&location.line))
        .count();
    assert!(in_util >= 3, "locations: {locations:?}");
    assert!(
        locations
            .iter()
            .all(|l| ["main.py", "pkg/util.py"].contains(&l.path.as_str())),
        "{locations:?}"
    );
    let result = result_of(&events);
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "42\nread-only\nhello file\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_module_import() {
    let sandbox = Sandbox::start();
    let result = sandbox
        .run(json!({
            "language": "javascript",
            "entry": "main.js",
            "files": [
                {"path": "main.js", "content": "import { double } from './lib/math.js';\nconsole.log(double(21));\n"},
                {"path": "lib/math.js", "content": "export function double(x) {\n  return 2 * x;\n}\n"},
            ],
        }))
        .await;
    assert_eq!(result.head.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout, "42\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_file_sets_are_refused() {
    let sandbox =
        Sandbox::start_with("max_concurrent_jobs = 1\nmax_files = 2\nmax_source_size = \"1KiB\"\n");
    let job =
        |files: Value, entry: &str| json!({"language": "python", "files": files, "entry": entry});
    let cases = [
        (
            job(
                json!([{"path": "/etc/passwd", "content": ""}]),
                "/etc/passwd",
            ),
            422,
            "invalid_entry",
        ),
        (
            job(json!([{"path": "/abs.py", "content": ""}]), "main.py"),
            422,
            "invalid_path",
        ),
        (
            job(json!([{"path": "../up.py", "content": ""}]), "main.py"),
            422,
            "invalid_path",
        ),
        (
            job(json!([{"path": "main.py", "content": ""}]), "other.py"),
            422,
            "invalid_entry",
        ),
        (
            job(
                json!([{"path": "a.py", "content": ""}, {"path": "b.py", "content": ""}, {"path": "c.py", "content": ""}]),
                "a.py",
            ),
            422,
            "too_many_files",
        ),
        (
            job(
                json!([{"path": "a.py", "content": "x".repeat(2000)}]),
                "a.py",
            ),
            413,
            "source_too_large",
        ),
        (
            job(
                json!([{"path": "a.py", "content": ""}, {"path": "./a.py", "content": ""}]),
                "a.py",
            ),
            422,
            "duplicate_path",
        ),
        (
            job(
                json!([{"path": "a.py", "content": "!!", "encoding": "base64"}]),
                "a.py",
            ),
            422,
            "invalid_base64",
        ),
        (
            json!({"language": "python", "source": "", "files": [{"path": "a.py", "content": ""}], "entry": "a.py"}),
            422,
            "invalid_request",
        ),
        (
            json!({"language": "python", "files": [{"path": "a.py", "content": ""}]}),
            422,
            "invalid_entry",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = sandbox.post("/v1/jobs", &body).await;
        assert_eq!(got, status, "{body} -> {error}");
        let error: ErrorBody = serde_json::from_value(error).expect("the JSON error body");
        assert_eq!(error.error.code, code, "{body} -> {error:?}");
    }
    let result = sandbox.run(super::python("print('fine')")).await;
    assert_eq!(result.stdout, "fine\n");
}
