//! A module re-imaged: its linear memory's initial contents replaced by the memory of an
//! instance that ran some set-up first (what wizer does), so that every instance starts
//! where that set-up left off. Used for CPython: the published snapshot, with the job
//! bootstrap already loaded into `__main__` (see `engine`'s prepared runtime).
//!
//! Only linear memory is carried over. That is sound for a set-up entered through an
//! export that returned: the stack pointer global is back at its initial value, tables
//! are not changed by C code, and nothing the host holds (WASI descriptors) is referred to
//! by the memory as long as the set-up closed what it opened.

use wasm_encoder::{
    ConstExpr, DataSection, Encode, ExportKind, ExportSection, MemorySection, MemoryType,
    RawSection,
};
use wasmparser::{DataKind, ExternalKind, Name, Parser, Payload, TypeRef};

#[derive(Debug, thiserror::Error)]
pub enum ReimageError {
    #[error("parsing the module: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    #[error("the module {0}: it cannot be re-imaged")]
    Unsupported(&'static str),
    #[error("the memory ({len} bytes) is not whole 64 KiB pages")]
    Pages { len: usize },
    #[error("the module's name section names no function {0}")]
    NoFunction(String),
}

/// What the re-imaged module exports beyond the original's exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Additions<'a> {
    /// (export name, name of a function in the name section): an internal function made
    /// callable by the host.
    pub functions: &'a [(&'a str, &'a str)],
    /// (export name, value): new immutable `i32` globals (an address in the image).
    pub globals: &'a [(&'a str, i32)],
}

/// What a first pass over the module finds.
struct Survey {
    imported_globals: u32,
    defined_globals: u32,
    /// Indices of the functions [`Additions::functions`] names, in its order.
    functions: Vec<u32>,
}

fn survey(wasm: &[u8], additions: &Additions<'_>) -> Result<Survey, ReimageError> {
    let mut imported_globals = 0;
    let mut defined_globals = 0;
    let mut functions: Vec<Option<u32>> = vec![None; additions.functions.len()];
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if matches!(import?.ty, TypeRef::Global(_)) {
                        imported_globals += 1;
                    }
                }
            }
            Payload::GlobalSection(reader) => defined_globals = reader.count(),
            Payload::CustomSection(reader) if reader.name() == "name" => {
                let names = wasmparser::NameSectionReader::new(wasmparser::BinaryReader::new(
                    reader.data(),
                    reader.data_offset(),
                ));
                for name in names {
                    if let Name::Function(map) = name? {
                        for naming in map {
                            let naming = naming?;
                            for (slot, (_, wanted)) in functions.iter_mut().zip(additions.functions)
                            {
                                if naming.name == *wanted && slot.is_none() {
                                    *slot = Some(naming.index);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let functions = functions
        .into_iter()
        .zip(additions.functions)
        .map(|(index, (_, name))| index.ok_or_else(|| ReimageError::NoFunction((*name).into())))
        .collect::<Result<_, _>>()?;
    Ok(Survey {
        imported_globals,
        defined_globals,
        functions,
    })
}

/// Granularity of the data segments written: runs of non-zero 4 KiB pages become one
/// segment each, so their count stays far below wasmparser's limit of 100,000.
const CHUNK: usize = 4096;

/// `wasm` with one defined, unshared 32-bit memory whose initial contents are `memory` (and
/// initial size its length); its other sections as they were, passive data segments kept
/// (after the new active ones), the name section's data-segment names dropped.
pub fn with_memory(
    wasm: &[u8],
    memory: &[u8],
    additions: &Additions<'_>,
) -> Result<Vec<u8>, ReimageError> {
    if !memory.len().is_multiple_of(65536) {
        return Err(ReimageError::Pages { len: memory.len() });
    }
    let survey = survey(wasm, additions)?;
    let mut globals_seen = additions.globals.is_empty();
    let mut module = wasm_encoder::Module::new();
    let mut memories = 0;
    let mut data_count_seen = false;
    let mut passive: Vec<&[u8]> = Vec::new();
    let segments = segments(memory);
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        match &payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    if matches!(import?.ty, TypeRef::Memory(_)) {
                        return Err(ReimageError::Unsupported("imports a memory"));
                    }
                }
            }
            Payload::MemorySection(reader) => {
                let mut section = MemorySection::new();
                for ty in reader.clone() {
                    let ty = ty?;
                    memories += 1;
                    if ty.memory64 || ty.shared || ty.page_size_log2.is_some() {
                        return Err(ReimageError::Unsupported(
                            "has a 64-bit, shared or custom-page memory",
                        ));
                    }
                    let minimum = (memory.len() / 65536) as u64;
                    if ty.maximum.is_some_and(|max| max < minimum) {
                        return Err(ReimageError::Unsupported(
                            "has a memory whose maximum is below the image",
                        ));
                    }
                    section.memory(MemoryType {
                        minimum,
                        maximum: ty.maximum,
                        memory64: false,
                        shared: false,
                        page_size_log2: None,
                    });
                }
                module.section(&section);
                continue;
            }
            Payload::GlobalSection(reader) if !additions.globals.is_empty() => {
                // The original entries as they were, then the new ones.
                let mut bytes = Vec::new();
                (reader.count() + additions.globals.len() as u32).encode(&mut bytes);
                let range = reader.range();
                let mut counted = wasmparser::BinaryReader::new(
                    &wasm[range.start as usize..range.end as usize],
                    0,
                );
                counted.read_var_u32()?;
                bytes.extend_from_slice(
                    &wasm[range.start as usize + counted.current_position()..range.end as usize],
                );
                for (_, value) in additions.globals {
                    bytes.extend_from_slice(&[0x7f, 0x00]);
                    ConstExpr::i32_const(*value).encode(&mut bytes);
                }
                module.section(&RawSection {
                    id: 6,
                    data: &bytes,
                });
                globals_seen = true;
                continue;
            }
            Payload::ExportSection(reader) => {
                let mut section = ExportSection::new();
                for export in reader.clone() {
                    let export = export?;
                    let kind = match export.kind {
                        ExternalKind::Func => ExportKind::Func,
                        ExternalKind::Table => ExportKind::Table,
                        ExternalKind::Memory => ExportKind::Memory,
                        ExternalKind::Global => ExportKind::Global,
                        ExternalKind::Tag => ExportKind::Tag,
                        ExternalKind::FuncExact => {
                            return Err(ReimageError::Unsupported("exports an exact function"));
                        }
                    };
                    section.export(export.name, kind, export.index);
                }
                for ((name, _), index) in additions.functions.iter().zip(&survey.functions) {
                    section.export(name, ExportKind::Func, *index);
                }
                for (offset, (name, _)) in additions.globals.iter().enumerate() {
                    let index = survey.imported_globals + survey.defined_globals + offset as u32;
                    section.export(name, ExportKind::Global, index);
                }
                module.section(&section);
                continue;
            }
            Payload::DataCountSection { .. } => {
                data_count_seen = true;
                // Written where it was, with the new count: passive segments keep their
                // place after the active ones (`data_passive_first` below).
                let count = segments.len() + passive_count(wasm)?;
                module.section(&wasm_encoder::DataCountSection {
                    count: count as u32,
                });
                continue;
            }
            Payload::DataSection(reader) => {
                for data in reader.clone() {
                    let data = data?;
                    match data.kind {
                        DataKind::Passive => passive.push(data.data),
                        DataKind::Active {
                            memory_index: 0, ..
                        } => {}
                        DataKind::Active { .. } => {
                            return Err(ReimageError::Unsupported("has several memories"));
                        }
                    }
                }
                let mut section = DataSection::new();
                for (offset, bytes) in &segments {
                    section.active(
                        0,
                        &ConstExpr::i32_const(*offset as i32),
                        bytes.iter().copied(),
                    );
                }
                for bytes in &passive {
                    section.passive(bytes.iter().copied());
                }
                module.section(&section);
                continue;
            }
            Payload::CustomSection(reader) if reader.name() == "name" => {
                module.section(&wasm_encoder::CustomSection {
                    name: "name".into(),
                    data: without_data_names(reader.data()).into(),
                });
                continue;
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            module.section(&RawSection {
                id,
                data: &wasm[range.start as usize..range.end as usize],
            });
        }
    }
    if !globals_seen {
        return Err(ReimageError::Unsupported(
            "has no global section to add globals to",
        ));
    }
    if memories != 1 {
        return Err(ReimageError::Unsupported(
            "does not define exactly one memory",
        ));
    }
    if data_count_seen && !passive.is_empty() {
        // `memory.init`/`data.drop` name passive segments by index, which moved.
        return Err(ReimageError::Unsupported(
            "has passive data segments that code may refer to",
        ));
    }
    Ok(module.finish())
}

/// Passive segments of `wasm`'s data section.
fn passive_count(wasm: &[u8]) -> Result<usize, ReimageError> {
    let mut count = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::DataSection(reader) = payload? {
            for data in reader {
                if matches!(data?.kind, DataKind::Passive) {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}

/// The memory's non-zero runs of [`CHUNK`]s, as (offset, bytes).
fn segments(memory: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = None;
    for (index, chunk) in memory.chunks(CHUNK).enumerate() {
        let zero = chunk.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(index * CHUNK),
            (true, Some(from)) => {
                out.push((from, &memory[from..index * CHUNK]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        out.push((from, &memory[from..]));
    }
    out
}

/// A name section's bytes without subsection 9 (data segment names): the segments changed.
/// Malformed bytes are passed through as they were (wasmtime reads names leniently).
fn without_data_names(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    while pos < data.len() {
        let id = data[pos];
        let mut reader = wasmparser::BinaryReader::new(&data[pos + 1..], 0);
        let Ok(size) = reader.read_var_u32() else {
            return data.to_vec();
        };
        let end = pos + 1 + reader.current_position() + size as usize;
        if end > data.len() {
            return data.to_vec();
        }
        if id != 9 {
            out.extend_from_slice(&data[pos..end]);
        }
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_of_the_reimaged_module_start_from_the_memory() {
        let wasm = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (global $sp (mut i32) (i32.const 1024))
                (data (i32.const 16) "before")
                (data "passive")
                (func $read (param i32) (result i32)
                    (i32.load8_u (local.get 0))))"#,
        )
        .unwrap();
        let mut memory = vec![0u8; 2 * 65536];
        memory[16..22].copy_from_slice(b"after!");
        memory[70_000] = 7;
        let additions = Additions {
            functions: &[("peek", "read")],
            globals: &[("where", 16)],
        };
        let reimaged = with_memory(&wasm, &memory, &additions).unwrap();
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &reimaged).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let at = instance
            .get_global(&mut store, "where")
            .unwrap()
            .get(&mut store);
        let peek = instance
            .get_typed_func::<i32, i32>(&mut store, "peek")
            .unwrap();
        assert_eq!(
            peek.call(&mut store, at.unwrap_i32()).unwrap(),
            i32::from(b'a')
        );
        let mem = instance.get_memory(&mut store, "memory").unwrap();
        assert_eq!(mem.data_size(&store), 2 * 65536);
        assert_eq!(&mem.data(&store)[16..22], b"after!");
        assert_eq!(mem.data(&store)[70_000], 7);
        assert_eq!(mem.data(&store)[..16], [0; 16]);
    }

    #[test]
    fn a_memory_that_is_not_whole_pages_is_refused() {
        let wasm = wat::parse_str("(module (memory 1))").unwrap();
        assert!(matches!(
            with_memory(&wasm, &[0; 100], &Additions::default()),
            Err(ReimageError::Pages { len: 100 })
        ));
    }

    #[test]
    fn an_imported_memory_is_refused() {
        let wasm = wat::parse_str(r#"(module (import "m" "memory" (memory 1)))"#).unwrap();
        assert!(matches!(
            with_memory(&wasm, &[0; 65536], &Additions::default()),
            Err(ReimageError::Unsupported(_))
        ));
    }

    #[test]
    fn a_function_the_names_do_not_know_is_refused() {
        let wasm = wat::parse_str("(module (memory 1) (func $f))").unwrap();
        let additions = Additions {
            functions: &[("g", "g")],
            globals: &[],
        };
        assert!(matches!(
            with_memory(&wasm, &[0; 65536], &additions),
            Err(ReimageError::NoFunction(name)) if name == "g"
        ));
    }

    #[test]
    fn runs_of_zero_pages_are_left_out() {
        let mut memory = vec![0u8; 4 * CHUNK];
        memory[1] = 1;
        memory[3 * CHUNK + 5] = 2;
        let segments = segments(&memory);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].0, 0);
        assert_eq!(segments[0].1.len(), CHUNK);
        assert_eq!(segments[1].0, 3 * CHUNK);
    }
}
