//! The JSON of a job view written piece by piece: the head with serde, then each
//! stream's output decoded and escaped one chunk at a time, so that serving a job with
//! megabytes of output never builds its whole view (nor a lossy copy of its output).

use bytes::Bytes;
use edgebox_wire::sandbox::JobHead;

use super::output::LossyUtf8;

/// A job's head and a snapshot of its output (chunks shared with the job).
pub struct Snapshot {
    pub head: JobHead,
    pub stdout: Vec<Bytes>,
    pub stderr: Vec<Bytes>,
}

/// Pieces of the JSON text of a [`edgebox_wire::sandbox::JobView`] (or of the `result`
/// event that carries one), in order; concatenated they are exactly what serde writes.
pub struct ViewPieces {
    state: Step,
    snapshot: Snapshot,
    decoder: LossyUtf8,
    event: bool,
}

#[derive(Clone, Copy)]
enum Step {
    Head,
    Stdout(usize),
    Between,
    Stderr(usize),
    End,
    Done,
}

impl ViewPieces {
    /// The `GET /v1/jobs/{id}` body.
    pub fn view(snapshot: Snapshot) -> Self {
        Self {
            state: Step::Head,
            snapshot,
            decoder: LossyUtf8::default(),
            event: false,
        }
    }

    /// The final `result` event of the events socket.
    pub fn result_event(snapshot: Snapshot) -> Self {
        Self {
            event: true,
            ..Self::view(snapshot)
        }
    }

    /// Escapes `text` as the inside of a JSON string (serde's escaping, quotes removed).
    fn escaped(text: &str) -> Bytes {
        let mut quoted = serde_json::to_vec(text).unwrap_or_else(|_| b"\"\"".to_vec());
        quoted.pop();
        quoted.remove(0);
        Bytes::from(quoted)
    }

    fn head(&self) -> Bytes {
        // `{"field":...}` → `{"field":...,"stdout":"`; the event variant leads with its tag
        // as serde's internally tagged representation does.
        let head = if self.event {
            serde_json::to_vec(&EventHead {
                kind: "result",
                head: &self.snapshot.head,
            })
        } else {
            serde_json::to_vec(&self.snapshot.head)
        };
        let mut text = head.unwrap_or_else(|_| b"{}".to_vec());
        text.pop();
        text.extend_from_slice(b",\"stdout\":\"");
        Bytes::from(text)
    }

    fn stream_piece(&mut self, stderr: bool, index: usize) -> Option<Bytes> {
        let chunks = if stderr {
            &self.snapshot.stderr
        } else {
            &self.snapshot.stdout
        };
        let mut text = String::new();
        match chunks.get(index) {
            Some(chunk) => self.decoder.push(chunk, &mut text),
            None => {
                self.decoder.finish(&mut text);
                return (!text.is_empty()).then(|| Self::escaped(&text));
            }
        }
        Some(Self::escaped(&text))
    }
}

#[derive(serde::Serialize)]
struct EventHead<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    head: &'a JobHead,
}

impl Iterator for ViewPieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            let (piece, next) = match self.state {
                Step::Head => (Some(self.head()), Step::Stdout(0)),
                Step::Stdout(i) => match self.snapshot.stdout.get(i) {
                    Some(_) => (self.stream_piece(false, i), Step::Stdout(i + 1)),
                    None => (self.stream_piece(false, i), Step::Between),
                },
                Step::Between => (
                    Some(Bytes::from_static(b"\",\"stderr\":\"")),
                    Step::Stderr(0),
                ),
                Step::Stderr(i) => match self.snapshot.stderr.get(i) {
                    Some(_) => (self.stream_piece(true, i), Step::Stderr(i + 1)),
                    None => (self.stream_piece(true, i), Step::End),
                },
                Step::End => (Some(Bytes::from_static(b"\"}")), Step::Done),
                Step::Done => return None,
            };
            self.state = next;
            if let Some(piece) = piece.filter(|piece| !piece.is_empty()) {
                return Some(piece);
            }
        }
    }
}

/// The whole `result` event as one text (a WebSocket message is sent whole).
pub fn result_text(snapshot: Snapshot) -> String {
    let mut text = Vec::new();
    for piece in ViewPieces::result_event(snapshot) {
        text.extend_from_slice(&piece);
    }
    // Every piece is UTF-8: serde output and escaped decoded text.
    String::from_utf8(text).unwrap_or_default()
}

/// What serde writes for the same view, for tests.
#[cfg(test)]
pub fn serde_view(snapshot: &Snapshot, event: bool) -> Vec<u8> {
    let view = edgebox_wire::sandbox::JobView {
        head: snapshot.head.clone(),
        stdout: String::from_utf8_lossy(&snapshot.stdout.concat()).into_owned(),
        stderr: String::from_utf8_lossy(&snapshot.stderr.concat()).into_owned(),
    };
    if event {
        serde_json::to_vec(&edgebox_wire::sandbox::JobEvent::Result(view)).unwrap()
    } else {
        serde_json::to_vec(&view).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use edgebox_wire::sandbox::{JobEvent, JobLimits, JobState, JobView, Language};
    use proptest::prelude::*;

    use super::*;

    fn head() -> JobHead {
        JobHead {
            id: "j\"1".into(),
            language: Language::Wat,
            state: JobState::Succeeded,
            start_time: Some("2026-01-01T00:00:00Z".into()),
            runtime_ms: 5,
            cpu_ms: 4,
            current_line: None,
            current_location: None,
            exit_code: Some(0),
            truncated: false,
            limits: JobLimits {
                wall_ms: 1,
                cpu_ms: 1,
                memory_mb: 1,
                output_bytes: 1,
            },
            scratch: false,
            error: Some("a \u{1} b".into()),
            tests: None,
            callback: None,
        }
    }

    fn chunks() -> impl Strategy<Value = Vec<Bytes>> {
        proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'"'),
                    Just(b'\\'),
                    Just(0u8),
                    Just(0xe2u8),
                    Just(0x82u8),
                    Just(0xacu8)
                ],
                1..64,
            )
            .prop_map(Bytes::from),
            0..5,
        )
    }

    proptest! {
        /// The pieces concatenate to exactly serde's text of the same view, which
        /// deserializes as the wire type (for the view and the result event).
        #[test]
        fn pieces_are_serdes_text(stdout in chunks(), stderr in chunks(), event in any::<bool>()) {
            let snapshot = || Snapshot { head: head(), stdout: stdout.clone(), stderr: stderr.clone() };
            let expected = serde_view(&snapshot(), event);
            let pieces = if event { ViewPieces::result_event(snapshot()) } else { ViewPieces::view(snapshot()) };
            let text: Vec<u8> = pieces.flat_map(|piece| piece.to_vec()).collect();
            prop_assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&expected));
            if event {
                let parsed: JobEvent = serde_json::from_slice(&text).unwrap();
                prop_assert!(matches!(parsed, JobEvent::Result(_)));
            } else {
                let parsed: JobView = serde_json::from_slice(&text).unwrap();
                let all = stdout.concat();
                prop_assert_eq!(parsed.stdout, String::from_utf8_lossy(&all).into_owned());
            }
        }
    }
}
