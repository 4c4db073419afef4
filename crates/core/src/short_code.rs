//! The short code of an in-person invite: what a patient types at
//! `<public_url>/code` instead of scanning the QR code or typing the link.
//!
//! Eight characters of Crockford's base32 (40 bits), shown as `XXXX-XXXX`.
//! The alphabet has no I, L, O or U, and what is typed is read forgivingly:
//! lower case, spaces and dashes are fine, and O, I and L (which a person
//! may read off a printed page for 0 and 1) count as 0, 1 and 1. 40 bits is
//! not a secret on its own; it only finds the link, whose date-of-birth and
//! ZIP check (and lockout) still stand, and wrong codes are limited per
//! address.

/// Crockford's base32: 0-9 and A-Z without I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters in a short code.
pub const SHORT_CODE_LEN: usize = 8;

/// The code made of 5 bytes (40 bits), in its canonical form (no dash).
pub fn short_code_from_bytes(bytes: [u8; 5]) -> String {
    let mut wide = [0u8; 8];
    wide[3..].copy_from_slice(&bytes);
    let bits = u64::from_be_bytes(wide);
    (0..SHORT_CODE_LEN)
        .rev()
        .map(|i| {
            let index = usize::try_from((bits >> (i * 5)) & 31).unwrap_or(0);
            char::from(ALPHABET[index])
        })
        .collect()
}

/// What the patient typed, as the canonical code; `None` when it cannot be
/// a code (wrong length or a character outside the alphabet), which is a
/// typing mistake to point out, not a wrong guess to count.
pub fn normalize_short_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    let valid = code.len() == SHORT_CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b));
    valid.then_some(code)
}

/// `ABCD2345` -> `ABCD-2345`, as printed and shown.
pub fn format_short_code(code: &str) -> String {
    if code.len() == SHORT_CODE_LEN && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_eight_characters_of_the_unambiguous_alphabet() {
        let code = short_code_from_bytes([0xff, 0, 0x12, 0x34, 0x56]);
        assert_eq!(code.len(), SHORT_CODE_LEN);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
        assert!(!code.contains(['I', 'L', 'O', 'U']));
        assert_eq!(short_code_from_bytes([0; 5]), "00000000");
        assert_eq!(short_code_from_bytes([0xff; 5]), "ZZZZZZZZ");
        assert_ne!(
            short_code_from_bytes([1, 2, 3, 4, 5]),
            short_code_from_bytes([1, 2, 3, 4, 6])
        );
    }

    /// The encoding itself is fixed: a printed code is derived again from
    /// the same bytes later (and after an upgrade), so it must not change.
    /// Big-endian, five bits a character, the first byte's top bit first.
    #[test]
    fn the_encoding_is_crockford_base32_of_the_bytes_in_order() {
        assert_eq!(
            short_code_from_bytes([0x12, 0x34, 0x56, 0x78, 0x9a]),
            "28T5CY4T"
        );
        assert_eq!(short_code_from_bytes([0, 0, 0, 0, 1]), "00000001");
        assert_eq!(short_code_from_bytes([0x80, 0, 0, 0, 0]), "G0000000");
    }

    #[test]
    fn what_is_typed_is_read_forgivingly() {
        assert_eq!(
            normalize_short_code("abcd-2345").as_deref(),
            Some("ABCD2345")
        );
        assert_eq!(
            normalize_short_code(" AB CD 23 45 ").as_deref(),
            Some("ABCD2345")
        );
        assert_eq!(
            normalize_short_code("oOiL-2345").as_deref(),
            Some("00112345")
        );
        assert_eq!(normalize_short_code("ABCD-234"), None);
        assert_eq!(normalize_short_code("ABCD-23456"), None);
        assert_eq!(
            normalize_short_code("ABCU-2345"),
            None,
            "U is not in the alphabet"
        );
        assert_eq!(normalize_short_code("ABCD-23é5"), None);
        assert_eq!(normalize_short_code(""), None);
    }

    #[test]
    fn codes_are_shown_in_two_groups_of_four() {
        assert_eq!(format_short_code("ABCD2345"), "ABCD-2345");
        // Anything that is not a code is shown as it is (and never split
        // inside a character).
        for other in ["ABC", "ABCD23456", "ABC\u{e9}234", ""] {
            assert_eq!(format_short_code(other), other);
        }
        let code = short_code_from_bytes([9, 8, 7, 6, 5]);
        assert_eq!(normalize_short_code(&format_short_code(&code)), Some(code));
    }
}
