//! Walking a GGUF header's metadata without reading it: enough to check what candle's reader
//! would trip over (it divides by `general.alignment`) before handing the file over.

use std::fs::File;
use std::io::{BufReader, Read};

const ALIGNMENT_KEY: &[u8; 17] = b"general.alignment";

/// The integer value of `general.alignment` in a GGUF header, found by skipping over the
/// metadata that precedes it; `None` when absent, not an integer, or the header cannot be
/// walked (candle's reader then reports what is wrong).
pub(crate) fn declared_alignment(reader: &mut BufReader<File>) -> Option<u64> {
    let mut word = [0u8; 4];
    reader.read_exact(&mut word).ok()?;
    if &word != b"GGUF" {
        return None;
    }
    let wide = match read_u32(reader)? {
        1 => false,
        2 | 3 => true,
        _ => return None,
    };
    let _tensors = read_len(reader, wide)?;
    let kv_count = read_len(reader, wide)?;
    for _ in 0..kv_count.min(1 << 20) {
        let key_len = read_len(reader, wide)?;
        // Only a key of the right length is read; every other one is skipped.
        let is_alignment = if key_len == ALIGNMENT_KEY.len() as u64 {
            let mut key = [0u8; ALIGNMENT_KEY.len()];
            reader.read_exact(&mut key).ok()?;
            &key == ALIGNMENT_KEY
        } else {
            skip(reader, key_len)?;
            false
        };
        let value_type = read_u32(reader)?;
        if is_alignment {
            let size = match value_type {
                0 | 1 => 1,
                2 | 3 => 2,
                4 | 5 => 4,
                10 | 11 => 8,
                _ => return None,
            };
            let mut bytes = [0u8; 8];
            reader.read_exact(&mut bytes[..size]).ok()?;
            return Some(u64::from_le_bytes(bytes));
        }
        skip_value(reader, value_type, wide, 0)?;
    }
    None
}

/// Size in bytes of a fixed-size GGUF value type (0 for strings and arrays).
fn fixed_size(value_type: u32) -> Option<u64> {
    Some(match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 | 9 => 0,
        _ => return None,
    })
}

fn skip_value(reader: &mut BufReader<File>, value_type: u32, wide: bool, depth: usize) -> Option<()> {
    match (value_type, fixed_size(value_type)?) {
        (8, _) => {
            let len = read_len(reader, wide)?;
            skip(reader, len)?;
        }
        (9, _) if depth < 4 => {
            let item_type = read_u32(reader)?;
            let count = read_len(reader, wide)?;
            match fixed_size(item_type)? {
                0 => (0..count).try_for_each(|_| skip_value(reader, item_type, wide, depth + 1))?,
                size => {
                    skip(reader, count.checked_mul(size)?)?;
                }
            }
        }
        (9, _) => return None,
        (_, size) => {
            skip(reader, size)?;
        }
    }
    Some(())
}

/// Moves `n` bytes on, keeping the buffer (GGUF vocabularies are tens of thousands of
/// short strings).
fn skip(reader: &mut BufReader<File>, n: u64) -> Option<()> {
    reader.seek_relative(i64::try_from(n).ok()?).ok()
}

fn read_u32(reader: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    reader.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

/// A length: u32 in GGUF v1, u64 from v2 on.
fn read_len(reader: &mut impl Read, wide: bool) -> Option<u64> {
    if !wide {
        return read_u32(reader).map(u64::from);
    }
    let mut b = [0u8; 8];
    reader.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}
