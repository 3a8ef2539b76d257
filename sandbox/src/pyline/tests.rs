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
    let probe = super::Probe {
        cframe_word: 60,
        filename: super::SUBMITTED_FILENAME,
    };
    assert_eq!(probe.current_line(&memory), None);
    let probe = super::Probe {
        cframe_word: u32::MAX - 1,
        filename: super::SUBMITTED_FILENAME,
    };
    assert_eq!(probe.current_line(&memory), None);
}
