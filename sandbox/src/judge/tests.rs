use edgebox_wire::sandbox::{CompareMode, FirstDifference, TestCase, Verdict};

use super::{CaseRun, first_difference, judge};
use crate::jobs::JobState;

fn check(
    mode: CompareMode,
    expected: &str,
    actual: &str,
    want: Option<(u32, Option<&str>, Option<&str>)>,
) {
    let got = first_difference(mode, expected, actual);
    let want = want.map(|(line, expected, actual)| FirstDifference {
        line,
        expected: expected.map(str::to_owned),
        actual: actual.map(str::to_owned),
    });
    assert_eq!(got, want, "{mode:?} {expected:?} vs {actual:?}");
}

#[test]
fn comparison_modes() {
    use CompareMode::*;
    check(Exact, "a\nb\n", "a\nb\n", None);
    check(Exact, "a\nb\n", "a\nb \n", Some((2, Some("b"), Some("b "))));
    check(Exact, "a\n", "a", Some((2, Some(""), None)));
    check(TrimTrailingWhitespace, "a\nb\n", "a  \nb\n\n\n", None);
    check(TrimTrailingWhitespace, "a\nb\n", "a\r\nb", None);
    check(
        TrimTrailingWhitespace,
        "a\nb\n",
        "a\nc\n",
        Some((2, Some("b"), Some("c"))),
    );
    check(
        TrimTrailingWhitespace,
        "a\nb\n",
        "a\n",
        Some((2, Some("b"), None)),
    );
    check(
        TrimTrailingWhitespace,
        " a\n",
        "a\n",
        Some((1, Some(" a"), Some("a"))),
    );
    check(Tokens, "1 2\n3\n", "1\n2   3", None);
    check(
        Tokens,
        "1 2\n3\n",
        "1 2\n4\n",
        Some((2, Some("3"), Some("4"))),
    );
    check(Tokens, "1 2 3", "1 2", Some((1, Some("1 2 3"), None)));
}

fn run(state: JobState, exit_code: Option<i32>, stdout: &str) -> CaseRun<'_> {
    CaseRun {
        state,
        exit_code,
        error: None,
        stdout: stdout.as_bytes(),
        stderr: b"",
        truncated: false,
        runtime_ms: 1,
        cpu_ms: 1,
    }
}

#[test]
fn verdicts() {
    let case = TestCase {
        expected_stdout: Some("42\n".into()),
        ..TestCase::default()
    };
    let mode = CompareMode::default();
    let verdict = |run| judge(0, &case, mode, run).verdict;
    assert_eq!(
        verdict(run(JobState::Succeeded, Some(0), "42")),
        Verdict::Accepted
    );
    assert_eq!(
        verdict(run(JobState::Succeeded, Some(0), "41")),
        Verdict::WrongAnswer
    );
    assert_eq!(
        verdict(run(JobState::Failed, Some(1), "42")),
        Verdict::RuntimeError
    );
    assert_eq!(
        verdict(run(JobState::Failed, None, "")),
        Verdict::RuntimeError
    );
    assert_eq!(
        verdict(run(JobState::TimedOut, None, "42")),
        Verdict::TimedOut
    );
    assert_eq!(
        verdict(run(JobState::MemoryExceeded, Some(1), "")),
        Verdict::MemoryExceeded
    );
    assert_eq!(
        verdict(run(JobState::OutputExceeded, None, "")),
        Verdict::OutputExceeded
    );
    let exits_3 = TestCase {
        expected_exit_code: Some(3),
        ..TestCase::default()
    };
    let verdict = |run| judge(0, &exits_3, mode, run).verdict;
    assert_eq!(
        verdict(run(JobState::Failed, Some(3), "")),
        Verdict::Accepted
    );
    assert_eq!(
        verdict(run(JobState::Succeeded, Some(0), "")),
        Verdict::WrongAnswer
    );
    assert_eq!(
        verdict(run(JobState::Failed, Some(2), "")),
        Verdict::RuntimeError
    );
    // Kept output is capped; the whole output was judged.
    let long = "x".repeat(100_000);
    let result = judge(
        0,
        &TestCase::default(),
        mode,
        run(JobState::Succeeded, Some(0), &long),
    );
    assert_eq!(result.stdout.len(), edgebox_wire::sandbox::MAX_CASE_OUTPUT);
    assert!(result.truncated);
}
