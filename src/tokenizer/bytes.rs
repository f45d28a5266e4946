//! Token text -> raw bytes: the GPT-2 byte<->char table and the SentencePiece conventions
//! (`▁` for a space, `<0xXX>` for a single byte). Pure functions, used once per vocabulary
//! entry at load time.

use super::ByteEncoding;

/// Whether GPT-2's table maps `byte` to the char of the same code point (printable Latin-1).
fn is_self_mapped(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes GPT-2 does not map to themselves, in byte order; the n-th stands for the
/// char U+0100 + n.
const SHIFTED: [std::ops::RangeInclusive<u8>; 3] = [0..=32, 127..=160, 173..=173];

/// The char GPT-2's byte-level BPE writes for `byte`.
#[cfg(test)]
pub(super) fn byte_to_char(byte: u8) -> char {
    if is_self_mapped(byte) {
        return char::from(byte);
    }
    let rank = SHIFTED
        .iter()
        .flat_map(Clone::clone)
        .position(|b| b == byte);
    let rank = u32::try_from(rank.expect("invariant: byte is shifted")).expect("rank < 68");
    char::from_u32(256 + rank).expect("invariant: 256 + rank < 324 is a valid char")
}

/// The byte that `c` stands for in GPT-2's table, if it is one of its 256 chars.
fn char_to_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    if let Ok(byte) = u8::try_from(code) {
        return is_self_mapped(byte).then_some(byte);
    }
    let mut rank = code.checked_sub(256)?;
    for range in SHIFTED {
        let len = u32::from(range.end() - range.start()) + 1;
        if rank < len {
            return u8::try_from(u32::from(*range.start()) + rank).ok();
        }
        rank -= len;
    }
    None
}

/// Bytes of a byte-level token, or `None` if some char is outside the table (an added token
/// written as raw text).
fn byte_level_bytes(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

/// The byte of a SentencePiece byte token `<0xXX>`.
pub(super) fn spm_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Raw bytes of an ordinary (not added, not special) vocabulary entry.
pub(super) fn token_bytes(token: &str, encoding: ByteEncoding) -> Vec<u8> {
    match encoding {
        ByteEncoding::ByteLevel => {
            byte_level_bytes(token).unwrap_or_else(|| token.as_bytes().to_vec())
        }
        ByteEncoding::SentencePiece => match spm_byte(token) {
            Some(byte) => vec![byte],
            None => token.replace('▁', " ").into_bytes(),
        },
        ByteEncoding::Plain => token.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_table_is_a_bijection_with_known_points() {
        let chars: Vec<char> = (0..=255u8).map(byte_to_char).collect();
        for (byte, c) in chars.iter().enumerate() {
            assert_eq!(char_to_byte(*c), Some(byte as u8));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn token_bytes_per_encoding() {
        assert_eq!(token_bytes("Ġworld", ByteEncoding::ByteLevel), b" world");
        assert_eq!(
            token_bytes("ĠâĢĻ", ByteEncoding::ByteLevel),
            " \u{2019}".as_bytes()
        );
        // Not all chars in the table: an added token kept as raw text.
        assert_eq!(
            token_bytes("<tool→>", ByteEncoding::ByteLevel),
            "<tool→>".as_bytes()
        );
        assert_eq!(
            token_bytes("▁Hello", ByteEncoding::SentencePiece),
            b" Hello"
        );
        assert_eq!(token_bytes("<0x0A>", ByteEncoding::SentencePiece), b"\n");
        assert_eq!(
            token_bytes("<0x0A0>", ByteEncoding::SentencePiece),
            b"<0x0A0>"
        );
        assert_eq!(token_bytes("▁x", ByteEncoding::Plain), "▁x".as_bytes());
    }
}
