//! The current line of a CPython guest, read by the host from linear memory.
//!
//! CPython (3.13 and later) keeps `_Py_DebugOffsets` at the start of `_PyRuntime`: the
//! cookie `xdebugpy`, the version, then the offsets of the runtime, interpreter, thread
//! state, frame and code object fields that out-of-process profilers read. The sampler
//! takes its layout from there. The structure grows between minor versions, so which of
//! its 64-bit slots holds which offset is the one thing kept per minor version
//! ([`SLOTS`]); the values themselves are the build's own.
//!
//! `_PyRuntime` is found once per runtime in the module's data segments (the cookie is
//! part of its static initialiser), so nothing needs to run to find it. The running frame
//! is then `_PyRuntime.interpreters.head -> threads.head -> current_frame`; frames chain
//! through `previous`, their code object is `f_executable` (a tagged stack reference:
//! the low bits are masked), entry frames that the interpreter pushes for itself are
//! skipped, and the line comes from the code object's location table at the instruction
//! `instr_ptr` points at. Every read is bounds-checked: a bad pointer yields `None`,
//! never a guessed line.

use bytes::Bytes;

/// Byte offsets (wasm32) of the fields the sampler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `_PyRuntimeState.interpreters.head`.
    pub interpreters_head: u32,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u32,
    /// `PyThreadState.current_frame`.
    pub current_frame: u32,
    pub frame_previous: u32,
    pub frame_executable: u32,
    pub frame_instr_ptr: u32,
    /// `_PyInterpreterFrame.owner` (one byte).
    pub frame_owner: u32,
    pub code_filename: u32,
    pub code_linetable: u32,
    pub code_firstlineno: u32,
    /// `co_code_adaptive`: the bytecode.
    pub code_bytecode: u32,
    pub bytes_size: u32,
    pub bytes_data: u32,
    pub ascii_length: u32,
    /// `sizeof(PyASCIIObject)`: a compact ASCII string's text follows it.
    pub ascii_data: u32,
}

/// The layout CPython 3.15.0's `_Py_DebugOffsets` gives on wasm32 (the pinned runtime's;
/// also what the unit tests lay out).
pub const LAYOUT_3_15_WASM32: Layout = Layout {
    interpreters_head: 924,
    threads_head: 3696,
    current_frame: 56,
    frame_previous: FRAME_PREVIOUS,
    frame_executable: FRAME_EXECUTABLE,
    frame_instr_ptr: FRAME_INSTR_PTR,
    frame_owner: FRAME_OWNER,
    code_filename: CODE_FILENAME,
    code_linetable: CODE_LINETABLE,
    code_firstlineno: CODE_FIRSTLINENO,
    code_bytecode: CODE_BYTECODE,
    bytes_size: BYTES_SIZE,
    bytes_data: BYTES_DATA,
    ascii_length: ASCII_LENGTH,
    ascii_data: ASCII_DATA,
};

const FRAME_EXECUTABLE: u32 = 0;
const FRAME_PREVIOUS: u32 = 4;
const FRAME_INSTR_PTR: u32 = 28;
const FRAME_OWNER: u32 = 38;
const CODE_FIRSTLINENO: u32 = 44;
const CODE_FILENAME: u32 = 80;
const CODE_LINETABLE: u32 = 92;
const CODE_BYTECODE: u32 = 128;
const BYTES_SIZE: u32 = 8;
const BYTES_DATA: u32 = 16;
const ASCII_LENGTH: u32 = 8;
const ASCII_DATA: u32 = 20;

/// Frames owned by the interpreter itself (the entry frame pushed when C calls into
/// Python) and by the C stack: `FRAME_OWNED_BY_INTERPRETER` and up since 3.14.
const OWNER_INTERPRETER: u8 = 3;

/// Which 64-bit slot of `_Py_DebugOffsets` (slot 0 is the cookie, 1 the version) holds
/// each offset of [`Layout`], per CPython minor version; read from the header of that
/// version and checked against the pinned build. Other versions get no live line.
struct Slots {
    minor: u8,
    /// `runtime_state.size`, `interpreter_state.size`, `thread_state.size`.
    runtime_size: usize,
    interp_size: usize,
    thread_size: usize,
    interpreters_head: usize,
    threads_head: usize,
    current_frame: usize,
    /// `interpreter_frame.size` then `previous`, `executable`, `instr_ptr`; `owner`.
    frame_size: usize,
    frame_owner: usize,
    /// `code_object.size` then `filename`, and the slots of `linetable`,
    /// `firstlineno` and `co_code_adaptive`.
    code_size: usize,
    code_linetable: usize,
    code_firstlineno: usize,
    code_bytecode: usize,
    /// `bytes_object.size` then `ob_size`, `ob_sval`.
    bytes_size: usize,
    /// `unicode_object.length` then `asciiobject_size`.
    unicode_length: usize,
}

const SLOTS: &[Slots] = &[Slots {
    minor: 15,
    runtime_size: 3,
    interp_size: 6,
    thread_size: 22,
    interpreters_head: 5,
    threads_head: 9,
    current_frame: 26,
    frame_size: 39,
    frame_owner: 44,
    code_size: 47,
    code_linetable: 51,
    code_firstlineno: 52,
    code_bytecode: 56,
    bytes_size: 86,
    unicode_length: 91,
}];

/// The cookie at the start of `_PyRuntime`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Frames walked at most from the current one towards the submitted source.
const MAX_FRAMES: usize = 256;
/// Location-table bytes decoded at most per sample (one sample per epoch tick). A real
/// table of a function this long is rare; lines beyond it read as unknown rather than
/// letting a hostile size word make every tick decode megabytes.
pub const MAX_LINETABLE_BYTES: usize = 64 * 1024;

/// The file name submitted Python source is compiled under by [`BOOTSTRAP`]; frames of
/// any other file (the bootstrap, the standard library) are skipped.
pub const SUBMITTED_FILENAME: &[u8] = b"<main>";

/// Where the running frame is found in a CPython instance, and how frames are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Address of `_PyRuntime` in linear memory.
    pub runtime: u32,
    pub layout: Layout,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("no _Py_DebugOffsets cookie in the module's data (CPython before 3.13?)")]
    NoCookie,
    #[error("the module's data section is malformed")]
    Malformed,
    #[error(
        "CPython {major}.{minor} has no entry in the sampler's table of _Py_DebugOffsets layouts"
    )]
    UnknownVersion { major: u8, minor: u8 },
    #[error("_Py_DebugOffsets of CPython 3.{minor}: {field} = {value} is outside its structure")]
    Implausible {
        minor: u8,
        field: &'static str,
        value: u64,
    },
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
    /// Finds `_PyRuntime` in `wasm`'s data segments and reads the layout from its
    /// `_Py_DebugOffsets`.
    pub fn from_module(wasm: &[u8]) -> Result<Self, ProbeError> {
        for segment in data_segments(wasm)? {
            if let Some(at) = find(segment.bytes, COOKIE) {
                let runtime = segment
                    .address
                    .checked_add(u32::try_from(at).map_err(|_| ProbeError::Malformed)?)
                    .ok_or(ProbeError::Malformed)?;
                let layout = layout_from_offsets(&segment.bytes[at..])?;
                return Ok(Self { runtime, layout });
            }
        }
        Err(ProbeError::NoCookie)
    }

    /// The innermost frame of the running thread, or `None`.
    fn current_frame(&self, memory: &[u8]) -> Option<u32> {
        let layout = &self.layout;
        let interp = read_u32(memory, self.runtime.checked_add(layout.interpreters_head)?)?;
        let thread = read_u32(memory, interp.checked_add(layout.threads_head)?)?;
        read_u32(memory, thread.checked_add(layout.current_frame)?)
    }

    /// The line of the code from `filename` the guest is executing, or `None`.
    pub fn current_line(&self, memory: &[u8], filename: &[u8]) -> Option<u32> {
        let frame = self.current_frame(memory)?;
        submitted_line(&self.layout, memory, frame, filename)
    }

    /// Which of `files` (file names as the guest has them) the guest is executing, and
    /// the line, or `None`.
    pub fn current_location(&self, memory: &[u8], files: &[Vec<u8>]) -> Option<(usize, u32)> {
        let frame = self.current_frame(memory)?;
        submitted_location(&self.layout, memory, frame, |name| {
            files.iter().position(|file| file == name)
        })
    }
}

/// One active data segment: where it is placed in memory and its bytes.
struct Segment<'a> {
    address: u32,
    bytes: &'a [u8],
}

fn leb_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, ProbeError> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*pos).ok_or(ProbeError::Malformed)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| ProbeError::Malformed);
        }
    }
    Err(ProbeError::Malformed)
}

fn leb_i32(bytes: &[u8], pos: &mut usize) -> Result<i32, ProbeError> {
    let mut value: i64 = 0;
    let mut shift = 0;
    loop {
        let byte = *bytes.get(*pos).ok_or(ProbeError::Malformed)?;
        *pos += 1;
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                value |= -1i64 << shift;
            }
            return i32::try_from(value).map_err(|_| ProbeError::Malformed);
        }
        if shift >= 35 {
            return Err(ProbeError::Malformed);
        }
    }
}

/// The active data segments of memory 0 placed at a constant address: all a wasi-libc
/// build has. Anything else in the data section is skipped or reported malformed.
fn data_segments(wasm: &[u8]) -> Result<Vec<Segment<'_>>, ProbeError> {
    if wasm.get(..4) != Some(b"\0asm".as_slice()) {
        return Err(ProbeError::Malformed);
    }
    let mut pos = 8;
    while pos < wasm.len() {
        let id = wasm[pos];
        pos += 1;
        let size = leb_u32(wasm, &mut pos)? as usize;
        let end = pos.checked_add(size).filter(|&end| end <= wasm.len());
        let end = end.ok_or(ProbeError::Malformed)?;
        if id != 11 {
            pos = end;
            continue;
        }
        let section = &wasm[..end];
        let count = leb_u32(section, &mut pos)?;
        let mut segments = Vec::new();
        for _ in 0..count {
            let flags = leb_u32(section, &mut pos)?;
            let address = match flags {
                0 => Some(const_expr(section, &mut pos)?),
                2 => {
                    let _memory = leb_u32(section, &mut pos)?;
                    Some(const_expr(section, &mut pos)?)
                }
                1 => None,
                _ => return Err(ProbeError::Malformed),
            };
            let len = leb_u32(section, &mut pos)? as usize;
            let bytes = section
                .get(pos..pos.checked_add(len).ok_or(ProbeError::Malformed)?)
                .ok_or(ProbeError::Malformed)?;
            pos += len;
            if let Some(address) = address {
                segments.push(Segment { address, bytes });
            }
        }
        return Ok(segments);
    }
    Ok(Vec::new())
}

/// `i32.const N end`: the only offset expression a static data segment of this kind has.
fn const_expr(bytes: &[u8], pos: &mut usize) -> Result<u32, ProbeError> {
    if bytes.get(*pos) != Some(&0x41) {
        return Err(ProbeError::Malformed);
    }
    *pos += 1;
    let value = leb_i32(bytes, pos)?;
    if bytes.get(*pos) != Some(&0x0b) {
        return Err(ProbeError::Malformed);
    }
    *pos += 1;
    Ok(value as u32)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads the [`Layout`] from `_Py_DebugOffsets` (`offsets` starts at its cookie), with
/// the slot table of its minor version, checking that every field lies inside its
/// structure.
pub fn layout_from_offsets(offsets: &[u8]) -> Result<Layout, ProbeError> {
    let slot = |index: usize| -> Result<u64, ProbeError> {
        let at = index * 8;
        let bytes = offsets.get(at..at + 8).ok_or(ProbeError::Malformed)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| ProbeError::Malformed)?,
        ))
    };
    if offsets.get(..8) != Some(COOKIE.as_slice()) {
        return Err(ProbeError::NoCookie);
    }
    let version = slot(1)?;
    let (major, minor) = ((version >> 24) as u8, (version >> 16) as u8);
    let table = SLOTS
        .iter()
        .find(|slots| major == 3 && slots.minor == minor)
        .ok_or(ProbeError::UnknownVersion { major, minor })?;
    // An offset must lie inside its structure (whose size is the slot before the
    // structure's first field) and fit a u32.
    let within = |field: &'static str, index: usize, size: u64| -> Result<u32, ProbeError> {
        let value = slot(index)?;
        if value >= size || value > u64::from(u32::MAX) {
            return Err(ProbeError::Implausible {
                minor,
                field,
                value,
            });
        }
        Ok(value as u32)
    };
    let runtime_size = slot(table.runtime_size)?;
    let interp_size = slot(table.interp_size)?;
    let thread_size = slot(table.thread_size)?;
    let frame_size = slot(table.frame_size)?;
    let code_size = slot(table.code_size)?;
    let bytes_size = slot(table.bytes_size)?;
    let ascii_size = slot(table.unicode_length + 1)?;
    Ok(Layout {
        interpreters_head: within("interpreters_head", table.interpreters_head, runtime_size)?,
        threads_head: within("threads_head", table.threads_head, interp_size)?,
        current_frame: within("current_frame", table.current_frame, thread_size)?,
        frame_previous: within("frame.previous", table.frame_size + 1, frame_size)?,
        frame_executable: within("frame.executable", table.frame_size + 2, frame_size)?,
        frame_instr_ptr: within("frame.instr_ptr", table.frame_size + 3, frame_size)?,
        frame_owner: within("frame.owner", table.frame_owner, frame_size)?,
        code_filename: within("code.filename", table.code_size + 1, code_size)?,
        code_linetable: within("code.linetable", table.code_linetable, code_size)?,
        code_firstlineno: within("code.firstlineno", table.code_firstlineno, code_size)?,
        // The bytecode follows the fixed part of the object.
        code_bytecode: within("code.co_code_adaptive", table.code_bytecode, code_size + 1)?,
        bytes_size: within("bytes.ob_size", table.bytes_size + 1, bytes_size)?,
        bytes_data: within("bytes.ob_sval", table.bytes_size + 2, bytes_size)?,
        ascii_length: within("unicode.length", table.unicode_length, ascii_size)?,
        ascii_data: u32::try_from(ascii_size).map_err(|_| ProbeError::Implausible {
            minor,
            field: "unicode.asciiobject_size",
            value: ascii_size,
        })?,
    })
}

/// Walks from `frame` through `previous` to the first frame of the submitted source and
/// returns its line.
pub fn submitted_line(layout: &Layout, memory: &[u8], frame: u32, filename: &[u8]) -> Option<u32> {
    submitted_location(layout, memory, frame, |name| {
        (name == filename).then_some(0)
    })
    .map(|(_, line)| line)
}

/// Walks from `frame` through `previous` to the first frame whose code's file name
/// `wanted` knows (giving its index), and returns that index and the frame's line.
pub fn submitted_location(
    layout: &Layout,
    memory: &[u8],
    mut frame: u32,
    wanted: impl Fn(&[u8]) -> Option<usize>,
) -> Option<(usize, u32)> {
    for _ in 0..MAX_FRAMES {
        if frame == 0 {
            return None;
        }
        let owner = *memory.get(frame.checked_add(layout.frame_owner)? as usize)?;
        if owner < OWNER_INTERPRETER {
            // A stack reference: the low bits are tags, objects are 4-byte aligned.
            let code = read_u32(memory, frame.checked_add(layout.frame_executable)?)? & !3;
            if let Some(index) = filename(layout, memory, code).and_then(&wanted) {
                return Some((index, frame_line(layout, memory, frame, code)?));
            }
        }
        frame = read_u32(memory, frame.checked_add(layout.frame_previous)?)?;
    }
    None
}

/// The code object's file name, when it is a compact ASCII string in bounds.
fn filename<'m>(layout: &Layout, memory: &'m [u8], code: u32) -> Option<&'m [u8]> {
    let filename = read_u32(memory, code.checked_add(layout.code_filename)?)?;
    let len = read_u32(memory, filename.checked_add(layout.ascii_length)?)?;
    read_bytes(memory, filename.checked_add(layout.ascii_data)?, len)
}

/// Line of the instruction `frame` is executing, from the code object's location table.
fn frame_line(layout: &Layout, memory: &[u8], frame: u32, code: u32) -> Option<u32> {
    let instr_ptr = read_u32(memory, frame.checked_add(layout.frame_instr_ptr)?)?;
    let first = code.checked_add(layout.code_bytecode)?;
    let index = instr_ptr.saturating_sub(first) / 2;
    let first_line = i32::try_from(read_u32(
        memory,
        code.checked_add(layout.code_firstlineno)?,
    )?)
    .ok()?;
    let table = read_u32(memory, code.checked_add(layout.code_linetable)?)?;
    let size = read_u32(memory, table.checked_add(layout.bytes_size)?)?;
    // Only the budget is read: a size word larger than memory then still decodes the
    // prefix that exists, and a huge one costs no more than the budget.
    let size = size.min(MAX_LINETABLE_BYTES as u32);
    let table = read_bytes(memory, table.checked_add(layout.bytes_data)?, size)?;
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

/// argv running `source` with `-c`: unbuffered, isolated from environment and user site.
fn dash_c_argv(source: &str) -> Vec<String> {
    ["python", "-u", "-I", "-c", source]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The program every Python job's instance runs. It initialises CPython, then reads its
/// job from stdin (a 48-byte header with the lengths of the program, of the
/// NUL-separated arguments and of the file name and the program's [`Form`], then those
/// three; what follows is the job's own stdin), compiles the source as `<main>` (or, for a multi-file program, as
/// its entry's `/app/...` name, with `/app`'s directory first on `sys.path` so that
/// imports between the files work) so that line numbers are the submitted ones, and
/// runs it as `__main__`. Instances can thus start before their job arrives (the
/// pre-started pool). Tracebacks leave out the bootstrap's own frame. It ends the
/// instance with `os._exit` once the program's `atexit` functions ran and its streams
/// are flushed: the instance is thrown away, so CPython's own finalisation (a full
/// collection, every module torn down) would be time spent on nothing.
pub const BOOTSTRAP_DEFS: &str = r#"import os, sys
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
    header = _edgebox_read(48)
    program = _edgebox_read(int(header[:12]))
    args = _edgebox_read(int(header[12:24])).decode()
    filename = _edgebox_read(int(header[24:36])).decode() or '<main>'
    form = int(header[36:])
    if form == 1:
        import marshal
        code = marshal.loads(program)
    else:
        try:
            code = compile(program.decode(), filename, 'exec')
        except SyntaxError as error:
            import traceback
            traceback.print_exception(type(error), error, None)
            return 1
        if form == 2:
            import marshal
            rest = memoryview(marshal.dumps(code))
            while rest:
                rest = rest[os.write(1, rest):]
            return 0
    del program
    sys.argv = [filename if filename != '<main>' else '-c'] + (args.split('\0') if args else [])
    namespace = {'__name__': '__main__', '__builtins__': __builtins__}
    if filename != '<main>':
        sys.path.insert(0, os.path.dirname(filename))
        namespace['__file__'] = filename
    try:
        exec(code, namespace)
    except SystemExit as error:
        status = error.code
        if status is None:
            return 0
        if isinstance(status, int):
            return status
        print(status, file=sys.stderr)
        return 1
    except BaseException as error:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        return 1
    return 0
def _edgebox_finish(status):
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return status & 0xff if status >= 0 else 1
def _edgebox_exit(status):
    os._exit(_edgebox_finish(status))
"#;

/// The bootstrap's last statement: runs the job an instance reads on stdin, then ends
/// the instance.
pub const BOOTSTRAP_RUN: &str = "_edgebox_exit(_edgebox_main())\n";

/// What the prepared CPython image (`engine`) ran once through `turn` before its memory
/// was taken: the bootstrap's functions defined in `__main__`, with `_edgebox_run` (a
/// job's instance calls only it; its address, which `id` is, on stdout as
/// `edgebox-entry ADDRESS`; it returns the exit status rather than calling `os._exit`,
/// whose trap out of the guest costs a backtrace and an unwind), stdout and stderr made unbuffered as `-u` makes them
/// for jobs entered through `run` (the old streams kept, so that they are never
/// finalised), `atexit` imported (a job's end would import it through importlib), and
/// every object made so far frozen out of the collector's sight, as
/// the published snapshot has its own. Before that it lists every object it can reach
/// (the collector's, and what they refer to, transitively) as `edgebox-immortal AT COUNT`
/// (an array of addresses), all kept alive by a global, for the host to make immortal in
/// the image ([`immortalize`]). Before both it runs a few jobs through the entry
/// ([`warm_up_stdin`]). Last, it fills the allocator's free chunks: this CPython has no
/// pymalloc, every object is a `dlmalloc` chunk, and the chunks the set-up freed are
/// scattered over the image's heap, where a job's new objects would land, each on a page
/// of its own; allocating (and keeping) blocks of every size up to 2 KiB until each size
/// comes from one run of adjacent chunks leaves a job's allocations on a few contiguous
/// pages.
pub static PREPARE_SOURCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{BOOTSTRAP_DEFS}{}",
        r#"def _edgebox_stdio():
    import io
    kept = []
    for fd, name in ((1, 'stdout'), (2, 'stderr')):
        old = getattr(sys, name)
        kept.append(old)
        stream = io.TextIOWrapper(io.FileIO(fd, 'wb', closefd=False), encoding=old.encoding,
                                  errors=old.errors, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, '__' + name + '__', stream)
    return kept
_edgebox_kept = _edgebox_stdio()
del _edgebox_stdio
def _edgebox_run():
    return _edgebox_finish(_edgebox_main())
sys.stdout.write('edgebox-entry %d\n' % id(_edgebox_run))
import atexit, gc
def _edgebox_warm():
    argv = sys.argv
    for _ in range(int(os.read(0, 12))):
        _edgebox_run()
    sys.argv = argv
_edgebox_warm()
del _edgebox_warm
def _edgebox_everything():
    import array
    gc.unfreeze()
    gc.collect()
    found = {}
    todo = gc.get_objects()
    todo.append(sys.modules)
    code = type(_edgebox_everything.__code__)
    while todo:
        obj = todo.pop()
        if id(obj) in found:
            continue
        found[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
        if type(obj) is code:
            todo.extend((obj.co_consts, obj.co_names, obj.co_filename, obj.co_name,
                         obj.co_qualname))
    return list(found.values()), array.array('I', found)
_edgebox_objects, _edgebox_addresses = _edgebox_everything()
del _edgebox_everything
sys.stdout.write('edgebox-immortal %d %d\n' % _edgebox_addresses.buffer_info())
gc.collect()
gc.freeze()
def _edgebox_fill():
    kept = [None] * 65536
    count = 0
    for size in [0] + list(range(2, 2048, 8)):
        run = step = last = 0
        while run < 8 and count < len(kept):
            block = bytes(size) if size else object()
            kept[count] = block
            count += 1
            distance = id(block) - last
            run = run + 1 if 0 < distance <= size + 64 and distance == step else 0
            step, last = distance, id(block)
    return kept
_edgebox_filled = _edgebox_fill()
del _edgebox_fill
"#
    )
});

/// What the set-up ([`PREPARE_SOURCE`]) reads on stdin: how many jobs it runs through
/// the bootstrap's entry before its memory is taken, then those jobs. A job's first run
/// of the bootstrap's functions specializes their bytecode (CPython's adaptive
/// interpreter rewrites it in place) and gives the dictionaries they read a keys version:
/// done once in the image, every job's instance is spared those writes, scattered over
/// the image's pages. The jobs write nothing and never touch `sys.stdin` (whose buffer
/// would carry what it read into the image).
pub fn warm_up_stdin() -> Vec<u8> {
    const RUNS: usize = 4;
    let mut stdin = format!("{RUNS:012}").into_bytes();
    for _ in 0..RUNS {
        stdin.extend_from_slice(&bootstrap_stdin(
            b"import sys\nprint(end='')\n",
            Form::Source,
            &[],
            "",
            b"",
        ));
    }
    stdin
}

/// The reference count CPython gives an object it makes immortal on a 32-bit build
/// (`_Py_IMMORTAL_INITIAL_REFCNT` in CPython 3.14/3.15's `Include/refcount.h`): from
/// `_Py_IMMORTAL_MINIMUM_REFCNT` (1 << 30) up an object is immortal, `Py_INCREF` and
/// `Py_DECREF` leave its count alone and it is never freed; from
/// `_Py_STATIC_IMMORTAL_MINIMUM_REFCNT` (6 << 28) up it would count as statically
/// allocated, which a heap object must not.
const IMMORTAL_REFCNT: u32 = 5 << 28;
const IMMORTAL_MINIMUM_REFCNT: u32 = 1 << 30;

/// What [`immortalize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Immortalized {
    /// Objects whose count was set to immortal.
    pub objects: usize,
    /// Objects that already were (static types, small ints, interned strings).
    pub already: usize,
}

/// Makes immortal every object of CPython's memory `memory` whose address is in the
/// array of `count` little-endian `u32`s at `at` (what [`PREPARE_SOURCE`] lists as
/// `edgebox-immortal AT COUNT`: every object it could reach, all kept alive by a global
/// list, so each address is a live object's). An instance of the image then never writes
/// those objects' reference counts, which are spread over the whole heap: a case
/// dirties only the pages it really changes, so fewer pages are faulted in again after
/// the pool slot's reset and fewer are restored by it. An object is never freed once
/// immortal; the instance is thrown away after one job, so that leaks nothing.
/// `ob_refcnt` is the first word of an object (a build without `Py_TRACE_REFS`, which
/// the probe's offsets assume too). An address outside the memory, or a count that is
/// not one (0), is refused: the list is not what it should be.
pub fn immortalize(memory: &mut [u8], at: u32, count: u32) -> Result<Immortalized, String> {
    let word = |memory: &[u8], address: usize| -> Option<u32> {
        let bytes = memory.get(address..address.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let mut done = Immortalized {
        objects: 0,
        already: 0,
    };
    for index in 0..count as usize {
        let address = word(memory, at as usize + 4 * index)
            .ok_or_else(|| format!("the address list ends outside the memory (entry {index})"))?
            as usize;
        let refcnt = word(memory, address)
            .ok_or_else(|| format!("object address {address:#x} is outside the memory"))?;
        if refcnt == 0 {
            return Err(format!("the object at {address:#x} has no references"));
        }
        if refcnt >= IMMORTAL_MINIMUM_REFCNT {
            done.already += 1;
            continue;
        }
        memory[address..address + 4].copy_from_slice(&IMMORTAL_REFCNT.to_le_bytes());
        done.objects += 1;
    }
    Ok(done)
}

/// The whole bootstrap's source.
fn bootstrap_source() -> String {
    format!("{BOOTSTRAP_DEFS}{BOOTSTRAP_RUN}")
}

/// The bootstrap compiled once by the runtime itself, as the hex of its `marshal`
/// form: each job then loads a code object instead of compiling ~50 lines of Python
/// (about 1 ms of every job at -O3).
static PREPARED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// argv of every Python job's instance.
pub fn bootstrap_argv() -> Vec<String> {
    match PREPARED.get() {
        Some(hex) => dash_c_argv(&format!(
            "import marshal\nexec(marshal.loads(bytes.fromhex('{hex}')))"
        )),
        None => dash_c_argv(&bootstrap_source()),
    }
}

/// Has `runtime` compile [`BOOTSTRAP`] and marshal it, for [`bootstrap_argv`]. On any
/// failure jobs keep compiling the source (slower, same behaviour).
pub async fn prepare_bootstrap(runtime: &crate::engine::Runtime) {
    use crate::exec::{self, Program, Sampler};
    use crate::jobs::{Job, Language, Limits, Stream};
    if PREPARED.get().is_some() {
        return;
    }
    let job = std::sync::Arc::new(Job::new(
        "prepare-bootstrap".into(),
        Language::Python,
        Limits {
            wall_ms: 60_000,
            cpu_ms: 60_000,
            memory_mb: 256,
            output_bytes: 1 << 20,
        },
        false,
    ));
    let source = format!(
        "import marshal, sys\nsource = bytes.fromhex('{}').decode()\n\
         sys.stdout.write(marshal.dumps(compile(source, '<string>', 'exec')).hex())",
        hex::encode(bootstrap_source())
    );
    let program = Program {
        pre: runtime.pre.clone(),
        entry: runtime.entry(),
        argv: dash_c_argv(&source),
        stdin: Bytes::new(),
        sampler: Sampler::None,
        scratch: None,
        app: None,
    };
    let outcome = exec::run(job.clone(), program).await;
    let hex = String::from_utf8_lossy(&job.output(Stream::Stdout)).into_owned();
    if outcome.exit_code == Some(0) && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        tracing::info!(
            bytes = hex.len() / 2,
            "CPython bootstrap compiled once for every job"
        );
        let _ = PREPARED.set(hex);
    } else {
        tracing::warn!(
            state = outcome.state.name(),
            error = ?outcome.error,
            stderr = %String::from_utf8_lossy(&job.output(Stream::Stderr)),
            "could not precompile the CPython bootstrap; jobs compile it themselves"
        );
    }
}

/// What the bootstrap is given as the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Source, compiled and run.
    Source = 0,
    /// A code object `marshal.dumps` made from the source by [`Form::Compile`] (a judged
    /// job's program, compiled once for all its cases), loaded and run.
    Code = 1,
    /// Source compiled only: the instance writes the code object's `marshal` form on
    /// stdout and exits 0 (a syntax error: the traceback on stderr, status 1).
    Compile = 2,
}

/// What a Python job's instance reads on stdin: its job, then the job's stdin.
/// `filename` is the entry's guest path for a multi-file program, else empty.
pub fn bootstrap_stdin(
    program: &[u8],
    form: Form,
    args: &[String],
    filename: &str,
    stdin: &[u8],
) -> Bytes {
    let args = args.join("\0");
    let mut bytes =
        Vec::with_capacity(48 + program.len() + args.len() + filename.len() + stdin.len());
    bytes.extend_from_slice(
        format!(
            "{:012}{:012}{:012}{:012}",
            program.len(),
            args.len(),
            filename.len(),
            form as u8
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(program);
    bytes.extend_from_slice(args.as_bytes());
    bytes.extend_from_slice(filename.as_bytes());
    bytes.extend_from_slice(stdin);
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests;
