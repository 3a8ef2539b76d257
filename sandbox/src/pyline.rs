//! The current line of a CPython 3.12 guest, read by the host from linear memory.
//!
//! Layout of the pinned wasm32 build (measured, see DESIGN.md): a frame object holds its
//! `_PyInterpreterFrame*` at +12; an interpreter frame has `f_code` at +0, `previous` at +4
//! and `prev_instr` at +28; a code object has `co_firstlineno` at +44, `co_filename` at
//! +80, `co_linetable` at +92 and its bytecode from +124; bytes objects keep their size at
//! +8 and payload from +16; compact ASCII strings keep their length at +8 and text from +20.
//!
//! The running frame is reached through one fixed word of the interpreter's static data
//! (the thread state's `cframe` pointer; `_PyCFrame.current_frame` is at +0). That word is
//! found once per runtime by [`calibrated_probe`]: it runs a known program, learns the
//! address of a known frame from `id(sys._getframe())`, and keeps the words that point at
//! a pointer to that frame, then to a second, deeper frame. Every read is bounds-checked:
//! a bad pointer yields `None`, never a guessed line.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::engine::{Runtime, SandboxEngine};
use crate::exec::{self, Program, Sampler};
use crate::jobs::{Job, Language, Limits, Stream};

const FRAME_OBJECT_IFRAME: u32 = 12;
const IFRAME_CODE: u32 = 0;
const IFRAME_PREVIOUS: u32 = 4;
const IFRAME_PREV_INSTR: u32 = 28;
const CODE_FIRSTLINENO: u32 = 44;
const CODE_FILENAME: u32 = 80;
const CODE_LINETABLE: u32 = 92;
const CODE_BYTECODE: u32 = 124;
const BYTES_SIZE: u32 = 8;
const BYTES_DATA: u32 = 16;
const ASCII_LENGTH: u32 = 8;
const ASCII_DATA: u32 = 20;
/// Frames walked at most from the current one towards the submitted source.
const MAX_FRAMES: usize = 256;
/// Location-table bytes decoded at most per sample (one sample per epoch tick). A real
/// table of a function this long is rare; lines beyond it read as unknown rather than
/// letting a hostile size word make every tick decode megabytes.
pub const MAX_LINETABLE_BYTES: usize = 64 * 1024;

/// The file name CPython gives source run with `-c` (the calibration program).
pub const DASH_C_FILENAME: &[u8] = b"<string>";

/// The file name submitted Python source is compiled under by [`BOOTSTRAP`]; frames of
/// any other file (the bootstrap, the standard library) are skipped.
pub const SUBMITTED_FILENAME: &[u8] = b"<main>";

/// Where the current frame pointer lives in a CPython instance.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Address of the thread state's `cframe` pointer.
    pub cframe_word: u32,
    /// Only frames whose code comes from this file count.
    pub filename: &'static [u8],
}

fn read_u32(memory: &[u8], addr: u32) -> Option<u32> {
    let start = addr as usize;
    let bytes = memory.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_bytes(memory: &[u8], addr: u32, len: u32) -> Option<&[u8]> {
    let start = addr as usize;
    memory.get(start..start.checked_add(len as usize)?)
}

impl Probe {
    /// The line of the submitted source the guest is executing, or `None`.
    pub fn current_line(&self, memory: &[u8]) -> Option<u32> {
        let cframe = read_u32(memory, self.cframe_word)?;
        let frame = read_u32(memory, cframe)?;
        submitted_line(memory, frame, self.filename)
    }

    /// Which of `files` (file names as the guest has them) the guest is executing, and
    /// the line, or `None`.
    pub fn current_location(&self, memory: &[u8], files: &[Vec<u8>]) -> Option<(usize, u32)> {
        let cframe = read_u32(memory, self.cframe_word)?;
        let frame = read_u32(memory, cframe)?;
        submitted_location(memory, frame, |name| {
            files.iter().position(|file| file == name)
        })
    }
}

/// Walks from `frame` through `previous` to the first frame of the submitted source and
/// returns its line.
pub fn submitted_line(memory: &[u8], frame: u32, filename: &[u8]) -> Option<u32> {
    submitted_location(memory, frame, |name| (name == filename).then_some(0)).map(|(_, line)| line)
}

/// Walks from `frame` through `previous` to the first frame whose code's file name
/// `wanted` knows (giving its index), and returns that index and the frame's line.
pub fn submitted_location(
    memory: &[u8],
    mut frame: u32,
    wanted: impl Fn(&[u8]) -> Option<usize>,
) -> Option<(usize, u32)> {
    for _ in 0..MAX_FRAMES {
        if frame == 0 {
            return None;
        }
        let code = read_u32(memory, frame.checked_add(IFRAME_CODE)?)?;
        if let Some(index) = filename(memory, code).and_then(&wanted) {
            return Some((index, frame_line(memory, frame, code)?));
        }
        frame = read_u32(memory, frame.checked_add(IFRAME_PREVIOUS)?)?;
    }
    None
}

/// The code object's file name, when it is a compact ASCII string in bounds.
fn filename(memory: &[u8], code: u32) -> Option<&[u8]> {
    let filename = read_u32(memory, code.checked_add(CODE_FILENAME)?)?;
    let len = read_u32(memory, filename.checked_add(ASCII_LENGTH)?)?;
    read_bytes(memory, filename.checked_add(ASCII_DATA)?, len)
}

/// Line of the instruction `frame` is executing, from the code object's location table.
fn frame_line(memory: &[u8], frame: u32, code: u32) -> Option<u32> {
    let prev_instr = read_u32(memory, frame.checked_add(IFRAME_PREV_INSTR)?)?;
    let first = code.checked_add(CODE_BYTECODE)?;
    let index = prev_instr.saturating_sub(first) / 2;
    let first_line = i32::try_from(read_u32(memory, code.checked_add(CODE_FIRSTLINENO)?)?).ok()?;
    let table = read_u32(memory, code.checked_add(CODE_LINETABLE)?)?;
    let size = read_u32(memory, table.checked_add(BYTES_SIZE)?)?;
    // Only the budget is read: a size word larger than memory then still decodes the
    // prefix that exists, and a huge one costs no more than the budget.
    let size = size.min(MAX_LINETABLE_BYTES as u32);
    let table = read_bytes(memory, table.checked_add(BYTES_DATA)?, size)?;
    line_for_index(table, first_line, index)
}

/// Decodes a 3.11+ location table up to the entry covering code unit `index`. The table
/// comes from guest memory, so every step is checked: an overflowing line or unit count,
/// a truncated entry or a missing entry marker is `None`, and at most
/// [`MAX_LINETABLE_BYTES`] are looked at.
pub fn line_for_index(table: &[u8], first_line: i32, index: u32) -> Option<u32> {
    let table = &table[..table.len().min(MAX_LINETABLE_BYTES)];
    let mut pos = 0;
    let mut line = first_line;
    let mut unit: u32 = 0;
    let next = |pos: &mut usize| -> Option<u8> {
        let byte = *table.get(*pos)?;
        *pos += 1;
        Some(byte)
    };
    let varint = |pos: &mut usize| -> Option<u32> {
        let mut byte = next(pos)?;
        let mut value = u32::from(byte & 63);
        let mut shift = 0;
        while byte & 64 != 0 {
            byte = next(pos)?;
            shift += 6;
            if shift > 30 {
                return None;
            }
            value |= u32::from(byte & 63) << shift;
        }
        Some(value)
    };
    let svarint = |pos: &mut usize| -> Option<i32> {
        let value = varint(pos)?;
        let magnitude = (value >> 1) as i32;
        Some(if value & 1 != 0 {
            -magnitude
        } else {
            magnitude
        })
    };
    while pos < table.len() {
        let head = next(&mut pos)?;
        if head & 0x80 == 0 {
            return None;
        }
        let kind = (head >> 3) & 15;
        let length = u32::from(head & 7) + 1;
        let entry_line = match kind {
            15 => None,
            14 => {
                line = line.checked_add(svarint(&mut pos)?)?;
                varint(&mut pos)?;
                varint(&mut pos)?;
                varint(&mut pos)?;
                Some(line)
            }
            13 => {
                line = line.checked_add(svarint(&mut pos)?)?;
                Some(line)
            }
            10..=12 => {
                line = line.checked_add(i32::from(kind - 10))?;
                next(&mut pos)?;
                next(&mut pos)?;
                Some(line)
            }
            _ => {
                next(&mut pos)?;
                Some(line)
            }
        };
        let end = unit.checked_add(length)?;
        if index < end {
            return entry_line.and_then(|line| u32::try_from(line).ok().filter(|&l| l > 0));
        }
        unit = end;
    }
    None
}

/// The calibration program. Line numbers matter: the loops are on lines 6–7 and 12–13.
const CALIBRATION_SOURCE: &str = "import sys
def probe():
    f = sys._getframe()
    sys.stdout.write('%d\\n' % id(f))
    sys.stdout.flush()
    for _ in range(3000000):
        pass
def deeper():
    f = sys._getframe()
    sys.stdout.write('%d\\n' % id(f))
    sys.stdout.flush()
    while True:
        pass
def outer():
    deeper()
probe()
outer()
";

/// State of a calibration run, advanced by the epoch callback.
#[derive(Default)]
pub struct Calibration {
    inner: Mutex<CalibrationState>,
}

#[derive(Default)]
struct CalibrationState {
    /// Words pointing at a word that points at the first known frame.
    candidates: Option<Vec<u32>>,
    found: Option<Probe>,
    failed: Option<String>,
}

impl Calibration {
    /// One epoch tick of the calibration program. Returns true when it should stop.
    pub fn step(&self, job: &Job, memory: &[u8]) -> bool {
        let mut state = self.inner.lock().unwrap();
        let ids: Vec<u32> = job
            .output(Stream::Stdout)
            .split(|&b| b == b'\n')
            .filter_map(|line| std::str::from_utf8(line).ok()?.trim().parse().ok())
            .collect();
        match (ids.len(), state.candidates.is_some()) {
            (1, false) => {
                let Some(frame) = read_u32(memory, ids[0].saturating_add(FRAME_OBJECT_IFRAME))
                else {
                    state.failed = Some("frame object out of bounds".into());
                    return true;
                };
                let line = submitted_line(memory, frame, DASH_C_FILENAME);
                // A tick can land between the flush and the loop (lines 4–5, more likely
                // on a loaded machine): the frame decoded fine, so look again next tick.
                if matches!(line, Some(3..=5)) {
                    return false;
                }
                if !matches!(line, Some(6 | 7)) {
                    state.failed = Some(format!(
                        "decoding the known frame gave line {line:?}, expected 6 or 7"
                    ));
                    return true;
                }
                let holders = words_equal_to(memory, &HashSet::from([frame]));
                let holders: HashSet<u32> = holders.into_iter().collect();
                state.candidates = Some(words_equal_to(memory, &holders));
                false
            }
            (2, true) => {
                let Some(frame) = read_u32(memory, ids[1].saturating_add(FRAME_OBJECT_IFRAME))
                else {
                    state.failed = Some("second frame object out of bounds".into());
                    return true;
                };
                let candidates = state.candidates.take().unwrap_or_default();
                let word = candidates.into_iter().find(|&word| {
                    read_u32(memory, word).and_then(|cframe| read_u32(memory, cframe))
                        == Some(frame)
                });
                match word {
                    Some(cframe_word) => {
                        let probe = Probe {
                            cframe_word,
                            filename: DASH_C_FILENAME,
                        };
                        match probe.current_line(memory) {
                            Some(12 | 13) => state.found = Some(probe),
                            // Still writing or flushing the id (lines 9–11): the probe
                            // found the frame; confirm on the next tick.
                            Some(9..=11) => {
                                state.candidates = Some(vec![cframe_word]);
                                return false;
                            }
                            other => {
                                state.failed =
                                    Some(format!("probe read line {other:?}, expected 12 or 13"))
                            }
                        }
                    }
                    None => state.failed = Some("no word tracks the current frame".into()),
                }
                true
            }
            _ => false,
        }
    }
}

/// Addresses of aligned words whose value is in `values`.
fn words_equal_to(memory: &[u8], values: &HashSet<u32>) -> Vec<u32> {
    memory
        .chunks_exact(4)
        .enumerate()
        .filter_map(|(i, word)| {
            let value = u32::from_le_bytes(word.try_into().ok()?);
            (value != 0 && values.contains(&value)).then_some((i * 4) as u32)
        })
        .collect()
}

/// Finds the CPython probe for `runtime`, caching it beside the compiled artifact. `None`
/// (lines reported as unknown) when calibration fails.
pub async fn calibrated_probe(engine: &Arc<SandboxEngine>, runtime: &Runtime) -> Option<Probe> {
    let cache = engine.dir.path.join("compiled").join(format!(
        "{}.{}.pyprobe",
        runtime.spec.file_name, runtime.spec.sha256
    ));
    if let Some(word) = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|text| text.trim().parse().ok())
    {
        return Some(Probe {
            cframe_word: word,
            filename: SUBMITTED_FILENAME,
        });
    }
    let calibration = Arc::new(Calibration::default());
    let job = Arc::new(Job::new(
        "calibration".into(),
        Language::Python,
        Limits {
            wall_ms: 60_000,
            cpu_ms: 60_000,
            memory_mb: 256,
            output_bytes: 4096,
        },
        false,
    ));
    let program = Program {
        pre: runtime.pre.clone(),
        argv: dash_c_argv(CALIBRATION_SOURCE),
        stdin: Bytes::new(),
        sampler: Sampler::Calibrate(calibration.clone()),
        scratch: None,
        app: None,
    };
    exec::run(job.clone(), program).await;
    let state = calibration.inner.lock().unwrap();
    match (&state.found, &state.failed) {
        (Some(probe), _) => {
            tracing::info!(
                cframe_word = probe.cframe_word,
                "calibrated the CPython line probe"
            );
            if let Err(error) = std::fs::write(&cache, probe.cframe_word.to_string()) {
                tracing::warn!(error = %error, "could not cache the CPython probe");
            }
            Some(Probe {
                filename: SUBMITTED_FILENAME,
                ..*probe
            })
        }
        (None, failed) => {
            tracing::warn!(
                reason = failed.as_deref().unwrap_or("the program ended first"),
                stderr = %String::from_utf8_lossy(&job.output(Stream::Stderr)),
                "CPython line probe calibration failed; Python lines will be null"
            );
            None
        }
    }
}

/// argv running `source` with `-c`: unbuffered, isolated from environment and user site.
fn dash_c_argv(source: &str) -> Vec<String> {
    ["python", "-u", "-I", "-c", source]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The program every Python job's instance runs. It initialises CPython, then reads its
/// job from stdin (a 36-byte header with the lengths of the source, of the
/// NUL-separated arguments and of the file name, then those three; what follows is the
/// job's own stdin), compiles the source as `<main>` (or, for a multi-file program, as
/// its entry's `/app/...` name, with `/app`'s directory first on `sys.path` so that
/// imports between the files work) so that line numbers are the submitted ones, and
/// runs it as `__main__`. Instances can thus start before their job arrives (the
/// pre-started pool). Tracebacks leave out the bootstrap's own frame.
const BOOTSTRAP: &str = r#"import os, sys
def _edgebox_read(n):
    parts = []
    while n > 0:
        chunk = os.read(0, n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b''.join(parts)
def _edgebox_main():
    header = _edgebox_read(36)
    source = _edgebox_read(int(header[:12])).decode()
    args = _edgebox_read(int(header[12:24])).decode()
    filename = _edgebox_read(int(header[24:])).decode() or '<main>'
    sys.argv = [filename if filename != '<main>' else '-c'] + (args.split('\0') if args else [])
    namespace = {'__name__': '__main__', '__builtins__': __builtins__}
    if filename != '<main>':
        sys.path.insert(0, os.path.dirname(filename))
        namespace['__file__'] = filename
    try:
        code = compile(source, filename, 'exec')
    except SyntaxError as error:
        import traceback
        traceback.print_exception(type(error), error, None)
        sys.exit(1)
    del source
    try:
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as error:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.exit(1)
_edgebox_main()
"#;

/// argv of every Python job's instance.
pub fn bootstrap_argv() -> Vec<String> {
    dash_c_argv(BOOTSTRAP)
}

/// What a Python job's instance reads on stdin: its job, then the job's stdin.
/// `filename` is the entry's guest path for a multi-file program, else empty.
pub fn bootstrap_stdin(source: &str, args: &[String], filename: &str, stdin: &[u8]) -> Bytes {
    let args = args.join("\0");
    let mut bytes =
        Vec::with_capacity(36 + source.len() + args.len() + filename.len() + stdin.len());
    bytes.extend_from_slice(
        format!(
            "{:012}{:012}{:012}",
            source.len(),
            args.len(),
            filename.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(source.as_bytes());
    bytes.extend_from_slice(args.as_bytes());
    bytes.extend_from_slice(filename.as_bytes());
    bytes.extend_from_slice(stdin);
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests;
