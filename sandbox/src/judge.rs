//! Judging a test case: its verdict from how the instance ended and from its stdout
//! compared with the expected output (`exact`, `trim_trailing_whitespace`, `tokens`).

use edgebox_wire::sandbox::{
    CaseResult, CompareMode, FirstDifference, MAX_CASE_OUTPUT, TestCase, Verdict,
};

use crate::jobs::JobState;

/// How a case's instance ended, as the runner reports it.
pub struct CaseRun<'a> {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    /// The job's output limit dropped some output.
    pub truncated: bool,
    pub runtime_ms: u64,
    pub cpu_ms: u64,
}

/// The result of case `index`: limits first (they explain any output), then the exit
/// code (a non-zero one is a runtime error unless it was the expected one), then stdout.
pub fn judge(index: usize, case: &TestCase, compare: CompareMode, run: CaseRun<'_>) -> CaseResult {
    let stdout = String::from_utf8_lossy(run.stdout);
    let expected_exit = case.expected_exit_code.unwrap_or(0);
    let mut difference = None;
    let mut error = run.error;
    let verdict = match run.state {
        JobState::TimedOut => Verdict::TimedOut,
        JobState::MemoryExceeded => Verdict::MemoryExceeded,
        JobState::OutputExceeded => Verdict::OutputExceeded,
        _ => match run.exit_code {
            // A trap, or a stop the host asked for (the scratch quota).
            None => Verdict::RuntimeError,
            Some(code) if code != expected_exit && code != 0 => Verdict::RuntimeError,
            Some(code) if code != expected_exit => {
                error = Some(format!("exit code {code}, expected {expected_exit}"));
                Verdict::WrongAnswer
            }
            Some(_) => {
                difference = case
                    .expected_stdout
                    .as_deref()
                    .and_then(|expected| first_difference(compare, expected, &stdout));
                if difference.is_some() {
                    Verdict::WrongAnswer
                } else {
                    // An exit code that was expected is not an error to report.
                    error = None;
                    Verdict::Accepted
                }
            }
        },
    };
    let (stdout, cut_out) = capped(&stdout);
    let (stderr, cut_err) = capped(&String::from_utf8_lossy(run.stderr));
    CaseResult {
        index: index as u32,
        name: case.name.clone(),
        verdict,
        runtime_ms: run.runtime_ms,
        cpu_ms: run.cpu_ms,
        exit_code: run.exit_code,
        stdout,
        stderr,
        truncated: run.truncated || cut_out || cut_err,
        difference,
        error,
    }
}

/// At most [`MAX_CASE_OUTPUT`] bytes of `text`, cut at a character boundary.
fn capped(text: &str) -> (String, bool) {
    if text.len() <= MAX_CASE_OUTPUT {
        return (text.to_owned(), false);
    }
    let mut end = MAX_CASE_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// Where `actual` first differs from `expected` under `mode`, or `None` when they match.
pub fn first_difference(
    mode: CompareMode,
    expected: &str,
    actual: &str,
) -> Option<FirstDifference> {
    match mode {
        CompareMode::Exact => {
            if expected == actual {
                return None;
            }
            let expected: Vec<&str> = expected.split('\n').collect();
            let actual: Vec<&str> = actual.split('\n').collect();
            Some(line_difference(&expected, &actual))
        }
        CompareMode::TrimTrailingWhitespace => {
            fn lines(text: &str) -> Vec<&str> {
                let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
                while lines.last() == Some(&"") {
                    lines.pop();
                }
                lines
            }
            let (expected, actual) = (lines(expected), lines(actual));
            (expected != actual).then(|| line_difference(&expected, &actual))
        }
        CompareMode::Tokens => {
            let tokens = |text: &str| -> Vec<(usize, String)> {
                text.lines()
                    .enumerate()
                    .flat_map(|(line, text)| {
                        text.split_whitespace()
                            .map(move |token| (line, token.to_owned()))
                    })
                    .collect()
            };
            let (want, got) = (tokens(expected), tokens(actual));
            let at = (0..want.len().max(got.len()))
                .find(|&i| want.get(i).map(|t| &t.1) != got.get(i).map(|t| &t.1))?;
            // Report the whole lines the first differing token is on.
            let line_of = |text: &str, tokens: &[(usize, String)]| {
                tokens
                    .get(at)
                    .and_then(|(line, _)| text.lines().nth(*line))
                    .map(str::to_owned)
            };
            let line = got.get(at).or(want.get(at)).map_or(0, |(line, _)| *line);
            Some(FirstDifference {
                line: line as u32 + 1,
                expected: line_of(expected, &want),
                actual: line_of(actual, &got),
            })
        }
    }
}

fn line_difference(expected: &[&str], actual: &[&str]) -> FirstDifference {
    let at = (0..expected.len().max(actual.len()))
        .find(|&i| expected.get(i) != actual.get(i))
        .unwrap_or(0);
    FirstDifference {
        line: at as u32 + 1,
        expected: expected.get(at).map(|line| (*line).to_owned()),
        actual: actual.get(at).map(|line| (*line).to_owned()),
    }
}

#[cfg(test)]
mod tests;
