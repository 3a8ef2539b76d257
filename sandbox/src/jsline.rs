//! The current line of JavaScript jobs.
//!
//! QuickJS keeps the interpreter's program counter in a wasm local of `JS_CallInternal`
//! (the copy in linear memory, `JSStackFrame::cur_pc`, is written only before calls), and
//! the pinned build has no DWARF for `quickjs.c`, so the host can read neither. The
//! runtime is therefore instrumented once when it is loaded: after each of the three
//! backward-jump sites of `JS_CallInternal` (`OP_goto`, `OP_goto16`, `OP_goto8`, where
//! the interpreter polls for interrupts), the new `pc` and the running function object
//! (`JSObject *`, whose bytecode holds the line table) are stored in two exported
//! globals. Every loop of a JS program
//! ends in one of those jumps, so on each epoch tick the host reads the line of the loop
//! the program is iterating, from the bytecode's `pc2line` table in guest memory.
//!
//! What this shows is the line of the loop head the program last jumped back to: straight
//! code between jumps and a function returned from (until its caller loops again) are
//! not seen. Lines past the end of the submitted source, damaged tables and pointers out
//! of memory give no line, never a panic.
//!
//! The facts used — function 262 is `JS_CallInternal`, `pc` is its local 6 and the
//! function object `p` its local 12 at the jump sites, the layouts of `JSObject` and
//! `JSFunctionBytecode` on wasm32, the
//! `pc2line` encoding — are those of QuickJS-NG 0.11.0 as built in the pinned file
//! (`runtimes::JAVASCRIPT`, checked by SHA-256 before instrumenting); a different file
//! is refused, and the three jump sites must match exactly.

use wasm_encoder::reencode::{Reencode, utils};
use wasmparser::{Operator, Parser, Payload};
use wasmtime::{AsContextMut, Global, Instance, Memory};

use crate::runtimes;

/// Exported globals the instrumented runtime writes at each backward jump.
pub const PC_GLOBAL: &str = "edgebox_js_pc";
pub const FUNCTION_GLOBAL: &str = "edgebox_js_function";

/// `JS_CallInternal` in the pinned build (absolute function index).
const CALL_INTERNAL: u32 = 262;
const PC_LOCAL: u32 = 6;
/// The function object being run (`JSObject *p`), whose bytecode is `p->u.func`'s.
const FUNCTION_LOCAL: u32 = 12;
/// `JSContext::interrupt_counter`: the store just before each jump's `pc` update.
const INTERRUPT_COUNTER_OFFSET: u64 = 272;
const JUMP_SITES: usize = 3;

/// `JSObject::u.func.function_bytecode` on wasm32 (`JS_CallInternal`'s generator path
/// loads it from the object at 32; the object's class id, 13, is read at 6).
const FUNCTION_BYTECODE: usize = 32;
/// `JSFunctionBytecode` fields on wasm32 (confirmed against the build's own
/// `find_line_num`, which loads 84, 80, 68 and 72 — the last, `col_num`, unused here).
const BYTE_CODE_BUF: usize = 20;
const LINE_NUM: usize = 68;
const PC2LINE_LEN: usize = 80;
const PC2LINE_BUF: usize = 84;
const PC2LINE_BASE: i64 = -1;
const PC2LINE_RANGE: u32 = 5;
const PC2LINE_OP_FIRST: u32 = 1;
/// Bytes of one function's line table read at most per sample.
const MAX_TABLE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error("the JavaScript runtime is not the pinned build (SHA-256 {0})")]
    NotPinned(String),
    #[error("JS_CallInternal has {0} backward-jump sites, not {JUMP_SITES}")]
    Sites(usize),
    #[error("re-encoding the JavaScript runtime: {0}")]
    Encode(String),
}

/// The pinned QuickJS runtime with its backward jumps reporting `pc` and bytecode.
pub fn instrument(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    let sha = runtimes::sha256_hex(wasm);
    if sha != runtimes::JAVASCRIPT.sha256 {
        return Err(InstrumentError::NotPinned(sha));
    }
    let encode = |e: &dyn std::fmt::Display| InstrumentError::Encode(e.to_string());
    let (mut imported_functions, mut globals) = (0, 0);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| encode(&e))? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import.map_err(|e| encode(&e))?.ty {
                        wasmparser::TypeRef::Func(_) => imported_functions += 1,
                        wasmparser::TypeRef::Global(_) => globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(section) => globals += section.count(),
            _ => {}
        }
    }
    let mut instrumenter = Instrumenter {
        next_function: imported_functions,
        first_new_global: globals,
        sites: 0,
    };
    let mut module = wasm_encoder::Module::new();
    instrumenter
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| encode(&e))?;
    if instrumenter.sites != JUMP_SITES {
        return Err(InstrumentError::Sites(instrumenter.sites));
    }
    Ok(module.finish())
}

struct Instrumenter {
    /// Absolute index of the next function body.
    next_function: u32,
    first_new_global: u32,
    sites: usize,
}

impl Reencode for Instrumenter {
    type Error = std::convert::Infallible;

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        utils::parse_global_section(self, globals, section)?;
        for _ in [PC_GLOBAL, FUNCTION_GLOBAL] {
            globals.global(
                wasm_encoder::GlobalType {
                    val_type: wasm_encoder::ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &wasm_encoder::ConstExpr::i32_const(0),
            );
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        utils::parse_export_section(self, exports, section)?;
        exports.export(
            PC_GLOBAL,
            wasm_encoder::ExportKind::Global,
            self.first_new_global,
        );
        exports.export(
            FUNCTION_GLOBAL,
            wasm_encoder::ExportKind::Global,
            self.first_new_global + 1,
        );
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        // DWARF (of wasi-libc only) names code offsets that the inserted code moves.
        if section.name().starts_with(".debug") {
            return Ok(());
        }
        utils::parse_custom_section(self, module, section)
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), wasm_encoder::reencode::Error<Self::Error>> {
        let index = self.next_function;
        self.next_function += 1;
        if index != CALL_INTERNAL {
            return utils::parse_function_body(self, code, func);
        }
        let mut function = self.new_function_with_parsed_locals(&func)?;
        let mut reader = func.get_operators_reader()?;
        // The jump sites: `ctx->interrupt_counter--` (a store at 272), then
        // `pc = offset + pc` (local 7 + local 6 into local 6).
        let mut window: [Option<Step>; 5] = [None; 5];
        while !reader.eof() {
            let operator = reader.read()?;
            let step = match &operator {
                Operator::I32Store { memarg } if memarg.offset == INTERRUPT_COUNTER_OFFSET => {
                    Some(Step::CounterStore)
                }
                Operator::LocalGet { local_index: 7 } => Some(Step::GetOffset),
                Operator::LocalGet { local_index } if *local_index == PC_LOCAL => Some(Step::GetPc),
                Operator::I32Add => Some(Step::Add),
                Operator::LocalSet { local_index } if *local_index == PC_LOCAL => Some(Step::SetPc),
                _ => None,
            };
            window.rotate_left(1);
            window[4] = step;
            function.instruction(&self.instruction(operator)?);
            if window
                == [
                    Some(Step::CounterStore),
                    Some(Step::GetOffset),
                    Some(Step::GetPc),
                    Some(Step::Add),
                    Some(Step::SetPc),
                ]
            {
                self.sites += 1;
                function
                    .instructions()
                    .local_get(PC_LOCAL)
                    .global_set(self.first_new_global)
                    .local_get(FUNCTION_LOCAL)
                    .global_set(self.first_new_global + 1);
            }
        }
        code.function(&function);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    CounterStore,
    GetOffset,
    GetPc,
    Add,
    SetPc,
}

/// The instrumented runtime's two globals in one instance.
#[derive(Clone, Copy)]
pub struct Probe {
    pc: Global,
    function: Global,
}

impl Probe {
    /// The globals of an instance of the instrumented runtime, if it is one.
    pub fn find(instance: &Instance, mut store: impl AsContextMut) -> Option<Self> {
        Some(Self {
            pc: instance.get_global(&mut store, PC_GLOBAL)?,
            function: instance.get_global(&mut store, FUNCTION_GLOBAL)?,
        })
    }

    /// The line of the loop head last jumped to, when it is one of the submitted
    /// source's `lines`.
    pub fn line(&self, mut store: impl AsContextMut, memory: Memory, lines: u32) -> Option<u32> {
        let pc = self.pc.get(&mut store).i32()? as u32 as usize;
        let function = self.function.get(&mut store).i32()? as u32 as usize;
        if pc == 0 || function == 0 {
            return None;
        }
        let memory = memory.data(&store);
        let bytecode = u32_at(memory, function.checked_add(FUNCTION_BYTECODE)?)? as usize;
        let line = line_at(memory, bytecode, pc)?;
        (1..=lines).contains(&line).then_some(line)
    }
}

fn u32_at(memory: &[u8], at: usize) -> Option<u32> {
    let bytes = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The line `b`'s `pc2line` table (QuickJS's encoding, as its `find_line_num` reads it)
/// gives for the code at or right after `pc`: a loop head's line.
fn line_at(memory: &[u8], b: usize, pc: usize) -> Option<u32> {
    let field = |offset: usize| u32_at(memory, b.checked_add(offset)?);
    let code = field(BYTE_CODE_BUF)? as usize;
    let target = u32::try_from(pc.checked_sub(code)?).ok()?;
    let table_at = field(PC2LINE_BUF)? as usize;
    let table_len = (field(PC2LINE_LEN)? as usize).min(MAX_TABLE);
    let table = memory.get(table_at..table_at.checked_add(table_len)?)?;
    let mut line = i64::from(field(LINE_NUM)? as i32);
    let mut at = 0;
    let mut position: u64 = 0;
    while at < table.len() {
        let op = u32::from(table[at]);
        at += 1;
        let new_line = if op == 0 {
            let (delta_pc, used) = uleb128(&table[at..])?;
            at += used;
            position += u64::from(delta_pc);
            let (delta_line, used) = sleb128(&table[at..])?;
            at += used;
            line + i64::from(delta_line)
        } else {
            let op = op - PC2LINE_OP_FIRST;
            position += u64::from(op / PC2LINE_RANGE);
            line + i64::from(op % PC2LINE_RANGE) + PC2LINE_BASE
        };
        // The column delta (read past: only lines are reported).
        let (_, used) = sleb128(&table[at..])?;
        at += used;
        line = new_line;
        // The first entry at or after the loop head: QuickJS marks lines at calls,
        // operators and statements, so the head's own first opcodes (`Date.now` loaded
        // before it is called) usually come before the mark of its line.
        if position >= u64::from(target) {
            break;
        }
    }
    u32::try_from(line).ok()
}

fn uleb128(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn sleb128(bytes: &[u8]) -> Option<(i32, usize)> {
    // QuickJS writes sleb128 as the zigzag of the value in uleb128.
    let (value, used) = uleb128(bytes)?;
    Some((((value >> 1) as i32) ^ -((value & 1) as i32), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_tables_decode_and_garbage_gives_no_line() {
        // A bytecode header at 0: code at 1000, table at 2000 (3 entries), line 1.
        let mut memory = vec![0u8; 4096];
        let put = |memory: &mut Vec<u8>, at: usize, value: u32| {
            memory[at..at + 4].copy_from_slice(&value.to_le_bytes())
        };
        put(&mut memory, BYTE_CODE_BUF, 1000);
        put(&mut memory, LINE_NUM, 1);
        put(&mut memory, PC2LINE_LEN, 6);
        put(&mut memory, PC2LINE_BUF, 2000);
        // pc +2, line +1 (short op), col 0; pc +0 line +2 (long op 0), col 0.
        let short = |dpc: u32, dline: i64| {
            (PC2LINE_OP_FIRST + dpc * PC2LINE_RANGE + (dline - PC2LINE_BASE) as u32) as u8
        };
        memory[2000..2006].copy_from_slice(&[short(2, 1), 0, 0, 3, 4, 0]);
        // Entries: from pc 2 line 2, from pc 5 line 4; a pc takes the first at or after it.
        assert_eq!(line_at(&memory, 0, 1000), Some(2));
        assert_eq!(line_at(&memory, 0, 1002), Some(2));
        assert_eq!(line_at(&memory, 0, 1003), Some(4));
        assert_eq!(line_at(&memory, 0, 1005), Some(4));
        assert_eq!(line_at(&memory, 0, 1009), Some(4));
        // Pointers past memory, a pc before the code: no line, no panic.
        assert_eq!(line_at(&memory, 4090, 1000), None);
        assert_eq!(line_at(&memory, 0, 10), None);
        put(&mut memory, PC2LINE_BUF, u32::MAX);
        assert_eq!(line_at(&memory, 0, 1002), None);
        for seed in 0..200u32 {
            let noise: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97) >> 13) as u8)
                .collect();
            let _ = line_at(&noise, (seed as usize * 13) % 4096, 1000 + seed as usize);
        }
    }
}
