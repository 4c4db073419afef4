//! Character sets (MSH-18, HL7 table 0211) and the decoding of a raw message
//! to UTF-8 text before it is parsed.
//!
//! The whole message is decoded first and parsed second. That is not only
//! simpler: in the double-byte sets of table 0211 (BIG-5, GB 18030, ISO IR87)
//! a second byte can be `|`, `^`, `~` or `\`, so splitting the raw bytes on
//! delimiters would cut characters in half.

use std::borrow::Cow;

/// The character set a message is decoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (MSH-18 blank, `UNICODE UTF-8`, `UNICODE`, `ASCII`, `ISO IR6`,
    /// `ISO IR192`). Bytes that are not valid UTF-8 fall back to Latin-1.
    Utf8,
    /// ISO 8859-1 (`8859/1`, `ISO IR100`), decoded by hand: byte = code point.
    /// (encoding_rs, following WHATWG, would decode this label as
    /// windows-1252.)
    Latin1,
    /// Another set of table 0211 that encoding_rs knows.
    Other(&'static encoding_rs::Encoding),
}

impl Charset {
    /// The character set named by an MSH-18 value (HL7 table 0211; case and
    /// surrounding spaces ignored). `None` for a name we do not know or
    /// cannot decode (e.g. `UNICODE UTF-16`).
    pub fn from_msh18(value: &str) -> Option<Charset> {
        // Upper case on the stack: this runs for every message.
        let value = value.trim();
        let mut buf = [0u8; 16];
        let upper = buf.get_mut(..value.len())?;
        upper.copy_from_slice(value.as_bytes());
        upper.make_ascii_uppercase();
        let label: &[u8] = match std::str::from_utf8(upper).ok()? {
            "" | "ASCII" | "ISO IR6" | "UNICODE" | "UNICODE UTF-8" | "UTF-8" | "ISO IR192" => {
                return Some(Charset::Utf8);
            }
            "8859/1" | "ISO IR100" | "ISO-8859-1" => return Some(Charset::Latin1),
            "8859/2" | "ISO IR101" => b"iso-8859-2",
            "8859/3" | "ISO IR109" => b"iso-8859-3",
            "8859/4" | "ISO IR110" => b"iso-8859-4",
            "8859/5" | "ISO IR144" => b"iso-8859-5",
            "8859/6" | "ISO IR127" => b"iso-8859-6",
            "8859/7" | "ISO IR126" => b"iso-8859-7",
            "8859/8" | "ISO IR138" => b"iso-8859-8",
            // WHATWG decodes ISO 8859-9 as its superset windows-1254.
            "8859/9" | "ISO IR148" => b"iso-8859-9",
            "8859/15" => b"iso-8859-15",
            "GB 18030-2000" | "GB18030" => b"gb18030",
            "BIG-5" | "BIG5" => b"big5",
            "KS X 1001" => b"euc-kr",
            "ISO IR87" => b"iso-2022-jp",
            _ => return None,
        };
        encoding_rs::Encoding::for_label(label).map(Charset::Other)
    }

    /// Decode bytes in this character set. UTF-8 that is not valid falls
    /// back to Latin-1 (the second field of the answer is then `true`).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, str>, bool) {
        match self {
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(text) => (Cow::Borrowed(text), false),
                Err(_) => (Cow::Owned(latin1(bytes)), true),
            },
            Charset::Latin1 => match std::str::from_utf8(bytes) {
                // Pure ASCII is the same in both: keep it borrowed.
                Ok(text) if bytes.is_ascii() => (Cow::Borrowed(text), false),
                _ => (Cow::Owned(latin1(bytes)), false),
            },
            Charset::Other(encoding) => {
                let (text, _) = encoding.decode_without_bom_handling(bytes);
                (text, false)
            }
        }
    }

    /// Encode text in this character set (for an ACK sent back to a sender
    /// that declared its MSH-18). Characters the set cannot hold become `?`.
    pub fn encode(&self, text: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 => text.as_bytes().to_vec(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
            Charset::Other(encoding) => {
                let (bytes, _, _) = encoding.output_encoding().encode(text);
                bytes.into_owned()
            }
        }
    }
}

/// Latin-1 to UTF-8: every byte is the code point of the same value.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// A raw message decoded to text, with what was learnt on the way.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The text, borrowed from the input when it was valid UTF-8.
    pub text: Cow<'a, str>,
    /// The character set that was used.
    pub charset: Charset,
    /// The first repetition of MSH-18 as sent (empty when absent).
    pub declared: String,
    /// MSH-18 named a character set we do not know; UTF-8 (with the Latin-1
    /// fallback) was used.
    pub unknown_charset: bool,
    /// The bytes were declared (or assumed) UTF-8 but were not valid UTF-8,
    /// so they were read as Latin-1.
    pub latin1_fallback: bool,
}

/// Decode the raw bytes of one message to UTF-8 text, using the character
/// set that MSH-18 declares: blank or `UNICODE UTF-8` → UTF-8, `8859/1` →
/// Latin-1, other sets of table 0211 through encoding_rs; bytes that are not
/// valid UTF-8 where UTF-8 was expected are read as Latin-1. A UTF-8 byte
/// order mark is dropped. Never fails.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let declared = msh18(bytes)
        .map(|raw| String::from_utf8_lossy(raw).trim().to_string())
        .unwrap_or_default();
    let (charset, unknown_charset) = match Charset::from_msh18(&declared) {
        Some(c) => (c, false),
        None => (Charset::Utf8, true),
    };
    let (text, latin1_fallback) = charset.decode(bytes);
    let charset = if latin1_fallback {
        Charset::Latin1
    } else {
        charset
    };
    Decoded {
        text,
        charset,
        declared,
        unknown_charset,
        latin1_fallback,
    }
}

/// The first repetition of MSH-18, read from the raw bytes (MSH is ASCII in
/// every character set of table 0211 but the ISO 2022 ones, where it still
/// is in practice).
fn msh18(bytes: &[u8]) -> Option<&[u8]> {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0x0B))?;
    let rest = &bytes[start..];
    let line_end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
    let line = &rest[..line_end];
    if !line.starts_with(b"MSH") || line.len() < 8 {
        return None;
    }
    let fs = line[3];
    let repetition = line[5];
    // Split on the field separator: element 0 is "MSH", element k (k >= 1)
    // is MSH-(k+1), so MSH-18 is element 17.
    let field = line.split(|&b| b == fs).nth(17)?;
    field.split(|&b| b == repetition).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Charset::from_msh18(""), Some(Charset::Utf8));
        assert_eq!(Charset::from_msh18(" unicode utf-8 "), Some(Charset::Utf8));
        assert_eq!(Charset::from_msh18("8859/1"), Some(Charset::Latin1));
        assert!(matches!(
            Charset::from_msh18("8859/15"),
            Some(Charset::Other(_))
        ));
        assert_eq!(Charset::from_msh18("UNICODE UTF-16"), None);
        assert_eq!(Charset::from_msh18("KLINGON"), None);
    }

    #[test]
    fn msh18_found_and_latin1_decoded() {
        let raw = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5||||||8859/1~UNICODE UTF-8\rPID|||1||Ren\xE9\r";
        let d = decode(raw);
        assert_eq!(d.declared, "8859/1");
        assert_eq!(d.charset, Charset::Latin1);
        assert!(d.text.contains("René"));
        assert!(!d.latin1_fallback);
    }

    #[test]
    fn invalid_utf8_falls_back() {
        let d = decode(b"MSH|^~\\&|A\rPID|||1||Ren\xE9\r");
        assert!(d.latin1_fallback);
        assert!(d.text.contains("René"));
    }

    #[test]
    fn valid_utf8_is_borrowed() {
        let d = decode("MSH|^~\\&|A\rPID|||1||René\r".as_bytes());
        assert!(matches!(d.text, Cow::Borrowed(_)));
    }

    #[test]
    fn latin1_roundtrip() {
        assert_eq!(Charset::Latin1.encode("é€"), vec![0xE9, b'?']);
    }
}
