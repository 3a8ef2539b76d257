//! The location-table decoder on hand-built tables covering every entry form.

use super::line_for_index;

/// Entries: short (2 units, line 5), one-line +1 (1 unit, line 6), no-column -2 (1 unit,
/// line 4), none (1 unit), long +10 (1 unit, line 14), short with a varint >63 delta.
fn table() -> Vec<u8> {
    vec![
        0x80 | 1,
        0x00, // short form, 2 units
        0x80 | (11 << 3),
        0x01,
        0x02, // one-line, delta +1
        0x80 | (13 << 3),
        5,                // no-column, svarint 5 = -2
        0x80 | (15 << 3), // no location
        0x80 | (14 << 3),
        20,
        0,
        1,
        1, // long form, +10
    ]
}

#[test]
fn decodes_each_entry_form() {
    let table = table();
    let lines: Vec<Option<u32>> = (0..7).map(|i| line_for_index(&table, 5, i)).collect();
    assert_eq!(
        lines,
        [Some(5), Some(5), Some(6), Some(4), None, Some(14), None]
    );
}

#[test]
fn multi_byte_varints_and_bad_tables() {
    // +100 as an svarint: 200 = 0b11_001000 -> chunks 8 | continue, then 3.
    let table = [0x80 | (13 << 3), 64 | 8, 3];
    assert_eq!(line_for_index(&table, 1, 0), Some(101));
    // A byte without the entry marker, or a truncated entry: unknown, not guessed.
    assert_eq!(line_for_index(&[0x01], 1, 0), None);
    assert_eq!(line_for_index(&[0x80 | (14 << 3), 64], 1, 0), None);
    assert_eq!(line_for_index(&[], 1, 0), None);
}

#[test]
fn out_of_bounds_pointers_read_nothing() {
    let memory = vec![0xffu8; 64];
    for runtime in [60, u32::MAX - 1] {
        let probe = super::Probe {
            runtime,
            layout: super::LAYOUT_3_15_WASM32,
        };
        assert_eq!(probe.current_line(&memory, super::SUBMITTED_FILENAME), None);
    }
}

/// `_Py_DebugOffsets` as CPython 3.15.0 lays it out on wasm32: the 3.15 slot table
/// applied to the pinned build's own values.
fn debug_offsets_3_15() -> Vec<u8> {
    let mut values = vec![0u64; 120];
    values[1] = 0x030f_00f0;
    let set = |values: &mut Vec<u64>, pairs: &[(usize, u64)]| {
        for &(slot, value) in pairs {
            values[slot] = value;
        }
    };
    set(
        &mut values,
        &[
            (3, 182_168),
            (5, 924),
            (6, 115_696),
            (9, 3696),
            (22, 736),
            (26, 56),
            (39, 44),
            (40, 4),
            (41, 0),
            (42, 28),
            (44, 38),
            (47, 132),
            (48, 80),
            (51, 92),
            (52, 44),
            (56, 128),
            (86, 20),
            (87, 8),
            (88, 16),
            (91, 8),
            (92, 20),
        ],
    );
    let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes[..8].copy_from_slice(super::COOKIE);
    bytes
}

#[test]
fn debug_offsets_give_the_3_15_layout() {
    let layout = super::layout_from_offsets(&debug_offsets_3_15()).unwrap();
    assert_eq!(layout, super::LAYOUT_3_15_WASM32);
}

#[test]
fn unknown_versions_and_implausible_offsets_are_refused() {
    let mut offsets = debug_offsets_3_15();
    offsets[8..16].copy_from_slice(&0x030c_00f0u64.to_le_bytes());
    assert_eq!(
        super::layout_from_offsets(&offsets),
        Err(super::ProbeError::UnknownVersion {
            major: 3,
            minor: 12
        })
    );
    // `previous` past the end of the frame structure.
    let mut offsets = debug_offsets_3_15();
    offsets[40 * 8..41 * 8].copy_from_slice(&400u64.to_le_bytes());
    assert!(matches!(
        super::layout_from_offsets(&offsets),
        Err(super::ProbeError::Implausible {
            field: "frame.previous",
            ..
        })
    ));
    assert_eq!(
        super::layout_from_offsets(&offsets[8..]),
        Err(super::ProbeError::NoCookie)
    );
    assert_eq!(
        super::layout_from_offsets(&offsets[..100]),
        Err(super::ProbeError::Malformed)
    );
}

/// `_PyRuntime` is found in a module's data segments, at the address its segment is
/// placed at plus the cookie's position in it.
#[test]
fn the_runtime_is_found_in_the_data_section() {
    let escaped: String = debug_offsets_3_15()
        .iter()
        .map(|byte| format!("\\{byte:02x}"))
        .collect();
    let wat = format!(
        "(module (memory 1) (data (i32.const 16) \"unrelated\") (data (i32.const 4096) \"abc{escaped}\"))"
    );
    let wasm = wat::parse_str(&wat).unwrap();
    let probe = super::Probe::from_module(&wasm).unwrap();
    assert_eq!(probe.runtime, 4099);
    assert_eq!(probe.layout, super::LAYOUT_3_15_WASM32);
    let plain = wat::parse_str("(module (memory 1) (data (i32.const 0) \"x\"))").unwrap();
    assert_eq!(
        super::Probe::from_module(&plain),
        Err(super::ProbeError::NoCookie)
    );
    assert_eq!(
        super::Probe::from_module(b"not wasm"),
        Err(super::ProbeError::Malformed)
    );
}

/// Property tests: the decoder and the frame walker read guest memory, which a hostile
/// guest controls entirely, so on any bytes they must return (never panic, never loop),
/// and on well-formed input they must agree with a model.
mod properties {
    use proptest::prelude::*;

    use super::super::{
        BYTES_DATA, BYTES_SIZE, CODE_BYTECODE, CODE_FILENAME, CODE_FIRSTLINENO, CODE_LINETABLE,
        FRAME_EXECUTABLE, FRAME_INSTR_PTR, FRAME_OWNER, FRAME_PREVIOUS, LAYOUT_3_15_WASM32, Layout,
        MAX_LINETABLE_BYTES, Probe, SUBMITTED_FILENAME, line_for_index,
    };

    const LAYOUT: Layout = LAYOUT_3_15_WASM32;
    /// Bytes per frame in the laid-out chains (a 3.15 frame's fixed part is 44).
    const FRAME: u32 = 48;

    fn submitted_line(memory: &[u8], frame: u32, filename: &[u8]) -> Option<u32> {
        super::super::submitted_line(&LAYOUT, memory, frame, filename)
    }

    /// One location-table entry as the model sees it.
    #[derive(Debug, Clone)]
    enum Entry {
        /// Kinds 0–9: same line, one byte of column data.
        Short { kind: u8, len: u8, column: u8 },
        /// Kinds 10–12: line + (kind - 10), two bytes of columns.
        OneLine {
            delta: u8,
            len: u8,
            columns: [u8; 2],
        },
        /// Kind 13: svarint line delta.
        NoColumn { delta: i32, len: u8 },
        /// Kind 14: svarint line delta, end line, two columns.
        Long { delta: i32, len: u8, rest: [u32; 3] },
        /// Kind 15: no line.
        None { len: u8 },
    }

    fn varint(out: &mut Vec<u8>, mut value: u32) {
        while value >= 64 {
            out.push(64 | (value & 63) as u8);
            value >>= 6;
        }
        out.push(value as u8);
    }

    fn svarint(out: &mut Vec<u8>, value: i32) {
        let zigzag = if value < 0 {
            (value.unsigned_abs() << 1) | 1
        } else {
            (value as u32) << 1
        };
        varint(out, zigzag);
    }

    fn head(kind: u8, len: u8) -> u8 {
        0x80 | (kind << 3) | (len - 1)
    }

    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            match *entry {
                Entry::Short { kind, len, column } => out.extend([head(kind, len), column & 0x7f]),
                Entry::OneLine {
                    delta,
                    len,
                    columns,
                } => out.extend([head(10 + delta, len), columns[0] & 0x7f, columns[1] & 0x7f]),
                Entry::NoColumn { delta, len } => {
                    out.push(head(13, len));
                    svarint(&mut out, delta);
                }
                Entry::Long { delta, len, rest } => {
                    out.push(head(14, len));
                    svarint(&mut out, delta);
                    rest.iter().for_each(|&value| varint(&mut out, value));
                }
                Entry::None { len } => out.push(head(15, len)),
            }
        }
        out
    }

    /// The line of every code unit, as CPython defines it (`None` where unknown or ≤ 0).
    fn model(entries: &[Entry], first_line: i32) -> Vec<Option<u32>> {
        let mut line = first_line;
        let mut units = Vec::new();
        for entry in entries {
            let (len, entry_line) = match *entry {
                Entry::Short { len, .. } => (len, Some(line)),
                Entry::OneLine { delta, len, .. } => {
                    line += i32::from(delta);
                    (len, Some(line))
                }
                Entry::NoColumn { delta, len } | Entry::Long { delta, len, .. } => {
                    line += delta;
                    (len, Some(line))
                }
                Entry::None { len } => (len, None),
            };
            let shown = entry_line
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
            units.extend(std::iter::repeat_n(shown, usize::from(len)));
        }
        units
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let len = 1u8..=8;
        prop_oneof![
            (0u8..=9, len.clone(), any::<u8>()).prop_map(|(kind, len, column)| Entry::Short {
                kind,
                len,
                column
            }),
            (0u8..=2, len.clone(), any::<[u8; 2]>()).prop_map(|(delta, len, columns)| {
                Entry::OneLine {
                    delta,
                    len,
                    columns,
                }
            }),
            (-300i32..300, len.clone()).prop_map(|(delta, len)| Entry::NoColumn { delta, len }),
            (-5000i32..5000, len.clone(), any::<[u32; 3]>()).prop_map(|(delta, len, rest)| {
                Entry::Long {
                    delta,
                    len,
                    rest: rest.map(|v| v % 100_000),
                }
            }),
            len.prop_map(|len| Entry::None { len }),
        ]
    }

    fn put(memory: &mut [u8], addr: u32, value: u32) {
        let at = addr as usize;
        memory[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Lays out, in otherwise random memory, a chain of `depth + 1` frames whose last one
    /// runs submitted code at code unit `index` of a code object with `table`.
    fn chain(
        noise: &[u8],
        depth: usize,
        table: &[u8],
        first_line: u32,
        index: u32,
    ) -> (Vec<u8>, u32) {
        const STRING: u32 = 64; // "<main>" string object
        const OTHER: u32 = 128; // "<frozen>" string object
        const CODE: u32 = 192; // submitted code object (bytecode from +128)
        const OTHER_CODE: u32 = 512;
        const FRAMES: u32 = 1024; // `FRAME` bytes per frame
        let table_at = FRAMES + FRAME * (depth as u32 + 1);
        let size = table_at as usize + 16 + table.len() + 64;
        let mut memory: Vec<u8> = noise
            .iter()
            .copied()
            .cycle()
            .take(size.max(noise.len()))
            .collect();
        if memory.len() < size {
            memory.resize(size, 0);
        }
        for (at, text) in [
            (STRING, SUBMITTED_FILENAME),
            (OTHER, b"<frozen>".as_slice()),
        ] {
            put(&mut memory, at + 8, text.len() as u32);
            memory[(at + 20) as usize..(at + 20) as usize + text.len()].copy_from_slice(text);
        }
        put(&mut memory, CODE + CODE_FIRSTLINENO, first_line);
        put(&mut memory, CODE + CODE_FILENAME, STRING);
        put(&mut memory, CODE + CODE_LINETABLE, table_at);
        put(&mut memory, OTHER_CODE + CODE_FILENAME, OTHER);
        put(&mut memory, table_at + BYTES_SIZE, table.len() as u32);
        let data = (table_at + BYTES_DATA) as usize;
        memory[data..data + table.len()].copy_from_slice(table);
        // Frame 0 is the innermost (library code); frame `depth` runs the submission.
        for i in 0..=depth as u32 {
            let frame = FRAMES + FRAME * i;
            let last = i == depth as u32;
            // The executable is a tagged stack reference: the walker masks the low bit.
            put(
                &mut memory,
                frame + FRAME_EXECUTABLE,
                if last { CODE | 1 } else { OTHER_CODE },
            );
            put(
                &mut memory,
                frame + FRAME_PREVIOUS,
                if last { 0 } else { frame + FRAME },
            );
            // Owned by the thread; an interpreter-owned frame (3) would be skipped.
            memory[(frame + FRAME_OWNER) as usize] = 0;
            if last {
                put(
                    &mut memory,
                    frame + FRAME_INSTR_PTR,
                    CODE + CODE_BYTECODE + 2 * index,
                );
            }
        }
        (memory, FRAMES)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes, any first line, any index: an answer, never a panic.
        #[test]
        fn decoder_never_panics(table in proptest::collection::vec(any::<u8>(), 0..512),
                                first_line in any::<i32>(), index in any::<u32>()) {
            if let Some(line) = line_for_index(&table, first_line, index) {
                prop_assert!(line > 0);
            }
        }

        /// Extreme deltas that overflow `i32` are unknown, not a wrapped or panicking line.
        #[test]
        fn overflowing_lines_are_unknown(first_line in (i32::MAX - 10)..=i32::MAX, index in 0u32..4) {
            let mut table = vec![head(13, 8)];
            svarint(&mut table, 1_000_000);
            prop_assert_eq!(line_for_index(&table, first_line, index), None);
        }

        /// Well-formed tables decode to the model's line for every unit, and past the
        /// end to `None`.
        #[test]
        fn decoder_matches_the_model(entries in proptest::collection::vec(entry(), 0..64),
                                     first_line in 1i32..100_000) {
            let table = encode(&entries);
            let expected = model(&entries, first_line);
            for (index, line) in expected.iter().enumerate() {
                prop_assert_eq!(line_for_index(&table, first_line, index as u32), *line, "unit {}", index);
            }
            prop_assert_eq!(line_for_index(&table, first_line, expected.len() as u32), None);
        }

        /// Random memory, random probe word: the walk ends with an answer.
        #[test]
        fn walker_never_panics_on_random_memory(memory in proptest::collection::vec(any::<u8>(), 0..4096),
                                                word in any::<u32>(), frame in any::<u32>()) {
            let probe = Probe { runtime: word, layout: LAYOUT };
            let _ = probe.current_line(&memory, SUBMITTED_FILENAME);
            let _ = submitted_line(&memory, frame, SUBMITTED_FILENAME);
            // Pointers near the ends of the address space must not wrap.
            let _ = submitted_line(&memory, u32::MAX - 3, SUBMITTED_FILENAME);
        }

        /// Memory whose words mostly point back into it (so the walk goes deep and may
        /// loop): bounded by the frame limit, never a panic.
        #[test]
        fn walker_terminates_on_self_referential_memory(words in proptest::collection::vec(0u32..1024, 256),
                                                        start in 0u32..1024) {
            let memory: Vec<u8> = words.iter().flat_map(|w| (w & !3).to_le_bytes()).collect();
            let _ = submitted_line(&memory, start & !3, SUBMITTED_FILENAME);
        }

        /// A frame chain in random memory: the walker skips library frames and reads the
        /// submitted frame's line exactly as the decoder does.
        #[test]
        fn walker_finds_the_submitted_frame(noise in proptest::collection::vec(any::<u8>(), 1..2048),
                                            depth in 0usize..16,
                                            entries in proptest::collection::vec(entry(), 1..32),
                                            first_line in 1u32..10_000,
                                            pick in any::<prop::sample::Index>()) {
            let table = encode(&entries);
            let expected = model(&entries, first_line as i32);
            let index = pick.index(expected.len()) as u32;
            let (memory, innermost) = chain(&noise, depth, &table, first_line, index);
            prop_assert_eq!(submitted_line(&memory, innermost, SUBMITTED_FILENAME), expected[index as usize]);
        }

        /// A size word claiming more than memory holds, or more than the budget, decodes
        /// no further than both allow.
        #[test]
        fn huge_table_sizes_are_bounded(noise in proptest::collection::vec(any::<u8>(), 1..256),
                                        claimed in any::<u32>()) {
            let table = encode(&[Entry::Short { kind: 0, len: 1, column: 0 }]);
            let (mut memory, innermost) = chain(&noise, 0, &table, 7, 0);
            let table_at = 1024 + FRAME;
            put(&mut memory, table_at + BYTES_SIZE, claimed);
            let line = submitted_line(&memory, innermost, SUBMITTED_FILENAME);
            let fits = (claimed as usize).min(MAX_LINETABLE_BYTES) <= memory.len() - (table_at + BYTES_DATA) as usize;
            if claimed >= 2 && fits {
                prop_assert_eq!(line, Some(7));
            } else if !fits {
                prop_assert_eq!(line, None);
            }
        }
    }

    /// A table longer than the budget: units past it read as unknown.
    #[test]
    fn budget_cuts_long_tables() {
        let entries = vec![
            Entry::Short {
                kind: 0,
                len: 8,
                column: 0
            };
            MAX_LINETABLE_BYTES
        ];
        let table = encode(&entries);
        assert_eq!(line_for_index(&table, 3, 0), Some(3));
        let last_in_budget = (MAX_LINETABLE_BYTES / 2 * 8 - 1) as u32;
        assert_eq!(line_for_index(&table, 3, last_in_budget), Some(3));
        assert_eq!(line_for_index(&table, 3, last_in_budget + 1), None);
    }
}

/// Listed objects get the immortal count; already immortal ones are left as they are;
/// a list that points outside the memory or at a zero count is refused.
#[test]
fn immortalize_sets_the_counts_the_list_names() {
    use super::{Immortalized, immortalize};
    let put = |memory: &mut [u8], at: usize, value: u32| {
        memory[at..at + 4].copy_from_slice(&value.to_le_bytes())
    };
    let get = |memory: &[u8], at: usize| u32::from_le_bytes(memory[at..at + 4].try_into().unwrap());
    let mut memory = vec![0u8; 4096];
    put(&mut memory, 100, 3);
    put(&mut memory, 200, 7 << 28);
    put(&mut memory, 1000, 100);
    put(&mut memory, 1004, 200);
    assert_eq!(
        immortalize(&mut memory, 1000, 2),
        Ok(Immortalized {
            objects: 1,
            already: 1
        })
    );
    assert_eq!(get(&memory, 100), 5 << 28);
    assert_eq!(get(&memory, 200), 7 << 28);
    put(&mut memory, 1008, 4094);
    assert!(immortalize(&mut memory, 1000, 3).is_err());
    put(&mut memory, 1008, 300);
    assert!(immortalize(&mut memory, 1000, 3).is_err());
    assert!(immortalize(&mut memory, 4092, 2).is_err());
}
