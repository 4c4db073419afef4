//! HL7 escape sequences (v2.5 section 2.7), decoded lazily and encoded for
//! the text we write (ACKs).

use super::{Charset, Delimiters};
use std::borrow::Cow;

/// Decode the escape sequences of one value (a subcomponent, or any larger
/// piece of a message that is read as text).
///
/// - `\F\ \S\ \T\ \R\ \E\` give the field, component, subcomponent,
///   repetition and escape characters, `\P\` the truncation character (2.7+).
/// - `\Xhh..\` gives the bytes `hh..`, read in the message's character set
///   (UTF-8 that is not valid falls back to Latin-1, as for the message).
/// - `\.br\` and `\.sp\` give a line break, `\.sk\` a space; the other
///   formatting commands (`\.in\`, `\.ti\`, `\.ce\`, `\.fi\`, `\.nf\`), the
///   highlighting `\H\ \N\` and the ISO 2022 character-set switches
///   `\C..\ \M..\` carry no text and are dropped.
/// - Anything else (`\Z..\` local escapes, unknown or malformed sequences,
///   an escape character without a closing one) is kept verbatim, so no
///   text is silently lost.
///
/// Borrows the input when it holds no escape character.
pub fn unescape<'a>(raw: &'a str, delimiters: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let esc = delimiters.escape;
    let Some(first) = memchr::memchr(esc, raw.as_bytes()) else {
        return Cow::Borrowed(raw);
    };
    let esc_char = char::from(esc);
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut rest = &raw[first..];
    // `rest` always starts with the escape character here.
    loop {
        let body = &rest[1..];
        let Some(close) = memchr::memchr(esc, body.as_bytes()) else {
            out.push_str(rest);
            break;
        };
        let seq = &body[..close];
        if !decode_sequence(seq, delimiters, charset, &mut out) {
            out.push(esc_char);
            out.push_str(seq);
            out.push(esc_char);
        }
        let after = &body[close + 1..];
        match memchr::memchr(esc, after.as_bytes()) {
            Some(next) => {
                out.push_str(&after[..next]);
                rest = &after[next..];
            }
            None => {
                out.push_str(after);
                break;
            }
        }
    }
    Cow::Owned(out)
}

/// Append the meaning of one escape sequence (without its escape
/// characters) to `out`; `false` when it is to be kept verbatim.
fn decode_sequence(seq: &str, d: &Delimiters, charset: Charset, out: &mut String) -> bool {
    let single = |b: u8, out: &mut String| {
        out.push(char::from(b));
        true
    };
    match seq {
        "F" => single(d.field, out),
        "S" => single(d.component, out),
        "T" => single(d.subcomponent, out),
        "R" => single(d.repetition, out),
        "E" => single(d.escape, out),
        "P" => match d.truncation {
            Some(t) => single(t, out),
            None => false,
        },
        "H" | "N" => true,
        _ => {
            if let Some(hex) = seq.strip_prefix('X') {
                return decode_hex(hex, charset, out);
            }
            if let Some(cmd) = seq.strip_prefix('.') {
                let name = cmd.get(..2).unwrap_or(cmd);
                let arg = cmd.get(2..).unwrap_or("");
                if !arg.is_empty()
                    && !arg
                        .trim_start_matches(['+', '-'])
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                {
                    return false;
                }
                return match name {
                    "br" | "sp" if arg.is_empty() || name == "sp" => {
                        out.push('\n');
                        true
                    }
                    "sk" => {
                        out.push(' ');
                        true
                    }
                    "in" | "ti" | "ce" | "fi" | "nf" => true,
                    _ => false,
                };
            }
            if (seq.starts_with('C') || seq.starts_with('M'))
                && seq.len() > 1
                && seq[1..].bytes().all(|b| b.is_ascii_hexdigit())
            {
                return true;
            }
            false
        }
    }
}

fn decode_hex(hex: &str, charset: Charset, out: &mut String) -> bool {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return false;
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect();
    let (text, _) = charset.decode(&bytes);
    out.push_str(&text);
    true
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Escape text to be placed in one value of a message written with these
/// delimiters: every delimiter becomes its escape sequence and every
/// control character `\Xhh\`, so the result can never break the structure
/// of a segment (nor an MLLP frame) and reads back exactly (a CR stays a
/// CR: `\.br\` would read back as a line feed, and an echoed MSH-10 must
/// match the sender's to the byte).
pub fn escape<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let special = |c: char| {
        c.is_ascii_control()
            || (c.is_ascii() && {
                let b = c as u8;
                b == d.field
                    || b == d.component
                    || b == d.repetition
                    || b == d.escape
                    || b == d.subcomponent
                    || Some(b) == d.truncation
            })
    };
    if !text.chars().any(special) {
        return Cow::Borrowed(text);
    }
    let e = char::from(d.escape);
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !special(c) {
            out.push(c);
            continue;
        }
        let b = c as u8;
        let code = if b == d.field {
            "F"
        } else if b == d.component {
            "S"
        } else if b == d.subcomponent {
            "T"
        } else if b == d.repetition {
            "R"
        } else if b == d.escape {
            "E"
        } else if Some(b) == d.truncation {
            "P"
        } else {
            out.push(e);
            out.push_str(&format!("X{b:02X}"));
            out.push(e);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        unescape(s, &Delimiters::STANDARD, Charset::Utf8).into_owned()
    }

    #[test]
    fn delimiters_and_formatting() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f"), "a|b^c&d~e\\f");
        assert_eq!(un(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(un(r"\H\bold\N\ text"), "bold text");
        assert_eq!(un(r"caf\XC3A9\"), "café");
        assert_eq!(un(r"caf\XE9\"), "café");
        assert_eq!(
            un(r"\Zlocal\ \XZZ\ \X1\ \oops"),
            r"\Zlocal\ \XZZ\ \X1\ \oops"
        );
        assert_eq!(un(r"\P\"), r"\P\");
        assert_eq!(un(r"a\\b"), r"a\\b");
        assert_eq!(un(r"\.in+4\x\.sp2\y"), "x\ny");
    }

    #[test]
    fn hex_in_latin1() {
        let s = unescape(r"Jos\XE9\", &Delimiters::STANDARD, Charset::Latin1);
        assert_eq!(s, "José");
    }

    #[test]
    fn borrowed_without_escapes() {
        assert!(matches!(
            unescape("plain", &Delimiters::STANDARD, Charset::Utf8),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escape_roundtrip() {
        let d = Delimiters::STANDARD;
        let text = "a|b^c~d\\e&f\r\ng\u{1c}h";
        let escaped = escape(text, &d);
        assert_eq!(escaped, r"a\F\b\S\c\R\d\E\e\T\f\X0D\\X0A\g\X1C\h");
        assert_eq!(un(&escaped), text);
    }
}
