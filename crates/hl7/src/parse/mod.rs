//! A zero-copy HL7 v2 parser (ER7, the pipe-and-hat encoding).
//!
//! # Why our own parser
//!
//! The crates that were correct on tricky messages in the project's stack
//! notes were evaluated first: **hl7kit 0.2** and **hl7-2 0.2** (over er7
//! 0.1). Both handle custom delimiters, all escapes, repetitions,
//! subcomponents and LF terminators. Neither was good enough for this layer:
//!
//! - Speed. Parse-only throughput on this project's 2-core machine, with a
//!   realistic 1 KB ADT^A04 and release builds, measured side by side under
//!   the same load: hl7kit about 23,000-25,000 messages/s, hl7-2 about
//!   43,000-50,000, this parser about 1,400,000 (`examples/parse_bench.rs`).
//!   The issue asks for at least 100,000. Both crates build an eager tree
//!   for every message whatever the caller reads (hl7kit a `Vec` per field,
//!   repetition, component and subcomponent; er7 a `String` per
//!   subcomponent).
//! - Zero copy. hl7kit copies the input into an owned `String`; er7 owns a
//!   `String` per leaf. We want views that borrow `&str` slices of the
//!   message and unescape lazily into `Cow<str>`.
//! - Escapes and character sets. Both decode `\Xhh\` hex escapes as UTF-8
//!   whatever MSH-18 says, so `\XE9\` in an `8859/1` message becomes U+FFFD
//!   instead of `é`, and neither reads MSH-18 at all; er7 also leaves
//!   `\.br\` undecoded.
//! - Errors. Parse errors do not carry the segment and field position that
//!   an ERR segment needs.
//!
//! This parser indexes only the segment boundaries when it parses (one
//! `memchr` pass and one small `Vec`); fields, repetitions, components and
//! subcomponents are found when they are read, by splitting the borrowed
//! segment text. It never panics on any input (a proptest and a cargo-fuzz
//! target, `fuzz/`, check that), and every failure is a [`ParseError`] value
//! with its position.
//!
//! # Decoding, then parsing
//!
//! [`decode`] turns the raw bytes into UTF-8 text using MSH-18 (blank or
//! `UNICODE UTF-8` → UTF-8, `8859/1` → Latin-1, other sets of table 0211
//! through encoding_rs, and Latin-1 for bytes that are not valid UTF-8);
//! [`Message::parse`] then borrows that text:
//!
//! ```
//! let raw = b"MSH|^~\\&|EHR|CLINIC|ENROLL|PORTAL|20260905120000||ADT^A08|42|P|2.5.1\rPID|1||123^^^CLINIC^MR||Doe^Jane\\T\\Ann||19800101|F\r";
//! let decoded = enroll_hl7::parse::decode(raw);
//! let msg = enroll_hl7::parse::Message::parse(&decoded.text).unwrap();
//! assert_eq!(msg.get("PID-5-2").as_deref(), Some("Jane&Ann"));
//! assert_eq!(msg.get_raw("PID-3-4"), Some("CLINIC"));
//! ```

mod charset;
mod escape;
mod path;

pub use charset::{Charset, Decoded, decode, latin1};
pub use escape::{escape, unescape};
pub use path::{Path, PathError};

use std::borrow::Cow;
use std::fmt;

/// The delimiters of a message: MSH-1 and the characters of MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`.
    pub escape: u8,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: u8,
    /// Truncation character (the fifth character of MSH-2, v2.7+), usually
    /// `#`.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: b'\\',
        subcomponent: b'&',
        truncation: None,
    };

    /// Check MSH-1 and MSH-2: four or five characters, printable ASCII, not
    /// a letter or digit, all different.
    pub fn from_msh(field: u8, msh2: &[u8]) -> Result<Delimiters, &'static str> {
        if !is_delimiter(field) {
            return Err("MSH-1 is not a usable field separator");
        }
        if !(4..=5).contains(&msh2.len()) {
            return Err("MSH-2 must hold four encoding characters (five with truncation)");
        }
        if !msh2.iter().all(|&b| is_delimiter(b)) {
            return Err("MSH-2 holds a character that cannot be a delimiter");
        }
        for (i, b) in msh2.iter().enumerate() {
            if *b == field || msh2[i + 1..].contains(b) {
                return Err("MSH-1 and MSH-2 repeat a delimiter");
            }
        }
        Ok(Delimiters {
            field,
            component: msh2[0],
            repetition: msh2[1],
            escape: msh2[2],
            subcomponent: msh2[3],
            truncation: msh2.get(4).copied(),
        })
    }

    /// MSH-1 as text.
    pub fn msh1(&self) -> char {
        char::from(self.field)
    }

    /// MSH-2 as text, e.g. `^~\&` (or `^~\&#`).
    pub fn msh2(&self) -> String {
        let mut s: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .map(|&b| char::from(b))
        .collect();
        if let Some(t) = self.truncation {
            s.push(char::from(t));
        }
        s
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::STANDARD
    }
}

pub(crate) fn is_delimiter(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

/// Segment names are three characters: an uppercase letter, then uppercase
/// letters or digits (`PID`, `PV1`, `ZPI`).
pub(crate) fn is_segment_name(b: &[u8]) -> bool {
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Why a message could not be parsed (the message is rejected: AR).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The segment at fault when it has a valid name (`MSH` for a bad
    /// header), else empty.
    pub segment: String,
    /// Which segment of that name (1 = the first).
    pub occurrence: usize,
    /// Position of the segment in the message (1 = the first; 0 when the
    /// message is empty).
    pub line: usize,
    /// The field at fault, when one is.
    pub field: Option<usize>,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return f.write_str(self.reason);
        }
        write!(f, "segment {}", self.line)?;
        if !self.segment.is_empty() {
            write!(f, " ({}", self.segment)?;
            if let Some(field) = self.field {
                write!(f, "-{field}")?;
            }
            f.write_str(")")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl ParseError {
    fn at(line: usize, segment: &str, field: Option<usize>, reason: &'static str) -> ParseError {
        ParseError {
            segment: segment.to_string(),
            occurrence: 1,
            line,
            field,
            reason,
        }
    }
}

/// The delimiters and character set a view needs to split and unescape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ctx {
    delimiters: Delimiters,
    charset: Charset,
}

#[derive(Debug, Clone, Copy)]
struct SegmentSpan {
    start: usize,
    end: usize,
    name: [u8; 3],
}

/// A parsed message: the borrowed text and where its segments are.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    text: &'a str,
    ctx: Ctx,
    segments: Vec<SegmentSpan>,
}

impl<'a> Message<'a> {
    /// Parse a message from text (see [`decode`] for raw bytes).
    ///
    /// Tolerated: leading whitespace, a byte order mark and MLLP framing
    /// bytes around the message; segments ended by `\r` (the standard), `\n`
    /// or `\r\n`; empty lines. Rejected with a [`ParseError`]: a message that
    /// does not start with MSH, unusable MSH-1/MSH-2, a segment whose name is
    /// not three uppercase letters or digits, and a second MSH (batches and
    /// concatenated messages are not taken).
    pub fn parse(text: &'a str) -> Result<Message<'a>, ParseError> {
        let text = text
            .trim_start_matches(|c: char| {
                c.is_ascii_whitespace() || c == '\u{b}' || c == '\u{feff}'
            })
            .trim_end_matches(['\r', '\n', '\u{1c}', '\u{b}']);
        let b = text.as_bytes();
        if b.is_empty() {
            return Err(ParseError {
                segment: String::new(),
                occurrence: 0,
                line: 0,
                field: None,
                reason: "the message is empty",
            });
        }
        if !b.starts_with(b"MSH") {
            let name = b.get(..3).filter(|n| is_segment_name(n));
            let name = name.and_then(|n| std::str::from_utf8(n).ok()).unwrap_or("");
            return Err(ParseError::at(
                1,
                name,
                None,
                "the message does not start with an MSH segment",
            ));
        }
        let first_end = memchr::memchr2(b'\r', b'\n', b).unwrap_or(b.len());
        let Some(&fs) = b.get(3).filter(|_| first_end > 3) else {
            return Err(ParseError::at(
                1,
                "MSH",
                Some(1),
                "MSH has no field separator",
            ));
        };
        let msh2_end = memchr::memchr(fs, &b[4..first_end]).map_or(first_end, |p| p + 4);
        let delimiters = Delimiters::from_msh(fs, &b[4..msh2_end]).map_err(|reason| {
            let field = if is_delimiter(fs) { 2 } else { 1 };
            ParseError::at(1, "MSH", Some(field), reason)
        })?;

        let mut segments = Vec::with_capacity(16);
        let mut start = 0;
        while start <= b.len() {
            let end = memchr::memchr2(b'\r', b'\n', &b[start..]).map_or(b.len(), |p| start + p);
            let line = &b[start..end];
            if !line.is_empty() {
                let line_no = segments.len() + 1;
                let name = &line[..line.len().min(3)];
                let valid = is_segment_name(name) && (line.len() == 3 || line[3] == fs);
                if !valid {
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        return Err(ParseError::at(
                            line_no,
                            "",
                            None,
                            "not a segment: a segment starts with a three-character name and the field separator",
                        ));
                    }
                } else if name == b"MSH" && line_no > 1 {
                    return Err(ParseError::at(
                        line_no,
                        "MSH",
                        None,
                        "a second MSH: batches and concatenated messages are not accepted",
                    )
                    .with_occurrence(2));
                } else {
                    segments.push(SegmentSpan {
                        start,
                        end,
                        name: [name[0], name[1], name[2]],
                    });
                }
            }
            start = end + 1;
        }

        let mut msg = Message {
            text,
            ctx: Ctx {
                delimiters,
                charset: Charset::Utf8,
            },
            segments,
        };
        let declared = msg
            .segment("MSH")
            .and_then(|s| s.field(18))
            .and_then(|f| f.repetition(1))
            .map(|r| r.raw())
            .unwrap_or("");
        if let Some(charset) = Charset::from_msh18(declared) {
            msg.ctx.charset = charset;
        }
        Ok(msg)
    }

    /// The message text that every view borrows from (without leading
    /// whitespace or framing).
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The delimiters declared by MSH-1 and MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.ctx.delimiters
    }

    /// The character set of MSH-18, used for `\Xhh\` escapes (UTF-8 when
    /// MSH-18 is blank or unknown).
    pub fn charset(&self) -> Charset {
        self.ctx.charset
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment, in order.
    pub fn all_segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        self.segments.iter().enumerate().map(move |(index, span)| {
            let occurrence = 1 + self.segments[..index]
                .iter()
                .filter(|s| s.name == span.name)
                .count();
            self.view(index, occurrence)
        })
    }

    /// The segments with this name, in order (`msg.segments("OBX")`).
    pub fn segments(&self, name: &str) -> impl Iterator<Item = Segment<'a>> + '_ {
        let wanted: Option<[u8; 3]> = name.as_bytes().try_into().ok();
        self.segments
            .iter()
            .enumerate()
            .filter(move |(_, s)| Some(s.name) == wanted)
            .enumerate()
            .map(move |(n, (index, _))| self.view(index, n + 1))
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<Segment<'a>> {
        self.segments(name).next()
    }

    fn view(&self, index: usize, occurrence: usize) -> Segment<'a> {
        let span = self.segments[index];
        Segment {
            line: &self.text[span.start..span.end],
            ctx: self.ctx,
            index,
            occurrence,
        }
    }

    /// The text at a path (see [`Path`]) with escapes decoded; `None` when
    /// the path does not parse or the value is absent, empty or the HL7
    /// null `""`. `msg.get("PID-5-2")` is the first given name.
    pub fn get(&self, path: &str) -> Option<Cow<'a, str>> {
        self.get_path(&Path::parse(path).ok()?)
    }

    /// [`Message::get`] with a parsed path.
    pub fn get_path(&self, path: &Path) -> Option<Cow<'a, str>> {
        let raw = self.raw_path(path)?;
        non_empty(raw, self.ctx)
    }

    /// The raw (still escaped) text at a path; `Some("")` when the value is
    /// there but empty, `None` when the path does not parse or points past
    /// the end of the message.
    pub fn get_raw(&self, path: &str) -> Option<&'a str> {
        self.raw_path(&Path::parse(path).ok()?)
    }

    /// [`Message::get_raw`] with a parsed path.
    pub fn raw_path(&self, path: &Path) -> Option<&'a str> {
        let name = path.segment_name();
        let segment = self.segments(name).nth(path.occurrence - 1)?;
        let field = segment.field(path.field)?;
        let Some(component) = path.component else {
            return match path.repetition {
                None => Some(field.raw()),
                Some(r) => field.repetition(r).map(|r| r.raw()),
            };
        };
        let component = field
            .repetition(path.repetition.unwrap_or(1))?
            .component(component)?;
        match path.subcomponent {
            None => Some(component.raw()),
            Some(s) => component.subcomponent(s).map(|s| s.raw()),
        }
    }
}

impl ParseError {
    fn with_occurrence(mut self, occurrence: usize) -> ParseError {
        self.occurrence = occurrence;
        self
    }
}

/// Decoded text, or `None` for an empty value or the HL7 null `""`.
fn non_empty<'a>(raw: &'a str, ctx: Ctx) -> Option<Cow<'a, str>> {
    if raw.is_empty() || raw == "\"\"" {
        return None;
    }
    Some(unescape(raw, &ctx.delimiters, ctx.charset))
}

/// Splits a value on one delimiter, or not at all (MSH-1 and MSH-2).
#[derive(Debug, Clone)]
struct Pieces<'a> {
    rest: Option<&'a str>,
    separator: Option<u8>,
}

impl<'a> Pieces<'a> {
    fn new(raw: &'a str, separator: Option<u8>) -> Self {
        Pieces {
            rest: Some(raw),
            separator,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let Some(sep) = self.separator else {
            self.rest = None;
            return Some(rest);
        };
        // Pieces are short: a plain loop beats memchr's per-call set-up.
        match rest.bytes().position(|b| b == sep) {
            Some(p) => {
                self.rest = Some(&rest[p + 1..]);
                Some(&rest[..p])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// One segment of a message.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    line: &'a str,
    ctx: Ctx,
    index: usize,
    occurrence: usize,
}

impl<'a> Segment<'a> {
    /// The segment name, e.g. `PID`.
    pub fn name(&self) -> &'a str {
        &self.line[..3]
    }

    /// The whole segment text, without its terminator.
    pub fn raw(&self) -> &'a str {
        self.line
    }

    /// Position in the message (0 = MSH).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Which segment of this name it is (1 = the first), as an ERR
    /// location gives it.
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }

    fn is_msh(&self) -> bool {
        self.line.as_bytes().starts_with(b"MSH")
    }

    /// The text after the segment name and its field separator.
    fn body(&self) -> Option<&'a str> {
        self.line.get(4..)
    }

    /// Field `n` in HL7 numbering (one-based; for MSH, field 1 is the field
    /// separator and field 2 the encoding characters). `None` past the last
    /// field.
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        if n == 0 {
            return None;
        }
        let fs = self.ctx.delimiters.field;
        let (raw, opaque) = if self.is_msh() {
            match n {
                1 => (self.line.get(3..4)?, true),
                2 => (Pieces::new(self.body()?, Some(fs)).next()?, true),
                _ => (Pieces::new(self.body()?, Some(fs)).nth(n - 2)?, false),
            }
        } else {
            (Pieces::new(self.body()?, Some(fs)).nth(n - 1)?, false)
        };
        Some(Field {
            raw,
            ctx: self.ctx,
            number: n,
            opaque,
        })
    }

    /// Number of fields present (the highest field number).
    pub fn field_count(&self) -> usize {
        let Some(body) = self.body() else { return 0 };
        let n = Pieces::new(body, Some(self.ctx.delimiters.field)).count();
        if self.is_msh() { n + 1 } else { n }
    }

    /// Every field, from field 1, in one pass over the segment.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + use<'a> {
        let ctx = self.ctx;
        let msh = self.is_msh();
        let separator = msh.then(|| Field {
            raw: &self.line[3..4],
            ctx,
            number: 1,
            opaque: true,
        });
        let pieces = self
            .body()
            .map(|b| Pieces::new(b, Some(ctx.delimiters.field)))
            .into_iter()
            .flatten();
        separator
            .into_iter()
            .chain(pieces.enumerate().map(move |(i, raw)| Field {
                raw,
                ctx,
                number: if msh { i + 2 } else { i + 1 },
                opaque: msh && i == 0,
            }))
    }

    /// Every field split once, for a caller that reads many of them
    /// ([`Segment::field`] scans the segment from its start each time).
    pub fn field_table(&self) -> FieldTable<'a> {
        let count = memchr::memchr_iter(self.ctx.delimiters.field, self.line.as_bytes()).count();
        let mut fields = Vec::with_capacity(count + 1);
        fields.extend(self.fields());
        FieldTable { fields }
    }

    /// Decoded text of a component of the first repetition of a field
    /// (`None` when absent, empty or null): `pid.text(5, 2)` is the given
    /// name. Component 0 means the whole field.
    pub fn text(&self, field: usize, component: usize) -> Option<Cow<'a, str>> {
        let field = self.field(field)?;
        if component == 0 {
            return field.text();
        }
        field.component(component)?.text()
    }
}

/// The fields of one segment, split once.
#[derive(Debug, Clone)]
pub struct FieldTable<'a> {
    fields: Vec<Field<'a>>,
}

impl<'a> FieldTable<'a> {
    /// Field `n` (HL7 numbering), as [`Segment::field`].
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        self.fields.get(n.checked_sub(1)?).copied()
    }

    /// As [`Segment::text`].
    pub fn text(&self, field: usize, component: usize) -> Option<Cow<'a, str>> {
        let field = self.field(field)?;
        if component == 0 {
            return field.text();
        }
        field.component(component)?.text()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the segment has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

macro_rules! leaf_methods {
    () => {
        /// The raw, still escaped, text.
        pub fn raw(&self) -> &'a str {
            self.raw
        }

        /// The text with escape sequences decoded (delimiters of lower
        /// levels stay as they are).
        pub fn value(&self) -> Cow<'a, str> {
            if self.opaque {
                return Cow::Borrowed(self.raw);
            }
            unescape(self.raw, &self.ctx.delimiters, self.ctx.charset)
        }

        /// Decoded text, or `None` when empty or the HL7 null `""`.
        pub fn text(&self) -> Option<Cow<'a, str>> {
            if self.opaque {
                return Some(Cow::Borrowed(self.raw)).filter(|s| !s.is_empty());
            }
            non_empty(self.raw, self.ctx)
        }

        /// True when there is no text at all.
        pub fn is_empty(&self) -> bool {
            self.raw.is_empty()
        }

        /// True for the HL7 null `""` (delete the value).
        pub fn is_null(&self) -> bool {
            self.raw == "\"\""
        }
    };
}

/// One field (all its repetitions).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    ctx: Ctx,
    number: usize,
    opaque: bool,
}

impl<'a> Field<'a> {
    leaf_methods!();

    /// The field number.
    pub fn number(&self) -> usize {
        self.number
    }

    fn separator(&self, b: u8) -> Option<u8> {
        (!self.opaque).then_some(b)
    }

    /// The repetitions (at least one, possibly empty).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + use<'a> {
        let ctx = self.ctx;
        let opaque = self.opaque;
        Pieces::new(self.raw, self.separator(ctx.delimiters.repetition))
            .map(move |raw| Repetition { raw, ctx, opaque })
    }

    /// Repetition `n` (one-based).
    pub fn repetition(&self, n: usize) -> Option<Repetition<'a>> {
        self.repetitions().nth(n.checked_sub(1)?)
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        self.repetition(1)?.component(n)
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a str,
    ctx: Ctx,
    opaque: bool,
}

impl<'a> Repetition<'a> {
    leaf_methods!();

    /// The components (at least one).
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        let ctx = self.ctx;
        let opaque = self.opaque;
        let sep = (!opaque).then_some(ctx.delimiters.component);
        Pieces::new(self.raw, sep).map(move |raw| Component { raw, ctx, opaque })
    }

    /// Component `n` (one-based).
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        self.components().nth(n.checked_sub(1)?)
    }

    /// The first `N` components in one pass (`None` past the last one).
    pub fn component_array<const N: usize>(&self) -> [Option<Component<'a>>; N] {
        let mut out = [None; N];
        for (slot, c) in out.iter_mut().zip(self.components()) {
            *slot = Some(c);
        }
        out
    }

    /// Decoded text of component `n`, `None` when absent, empty or null.
    pub fn text_of(&self, n: usize) -> Option<Cow<'a, str>> {
        self.component(n)?.text()
    }
}

/// One component.
#[derive(Debug, Clone, Copy)]
pub struct Component<'a> {
    raw: &'a str,
    ctx: Ctx,
    opaque: bool,
}

impl<'a> Component<'a> {
    leaf_methods!();

    /// The subcomponents (at least one).
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + use<'a> {
        let ctx = self.ctx;
        let opaque = self.opaque;
        let sep = (!opaque).then_some(ctx.delimiters.subcomponent);
        Pieces::new(self.raw, sep).map(move |raw| Subcomponent { raw, ctx, opaque })
    }

    /// Subcomponent `n` (one-based).
    pub fn subcomponent(&self, n: usize) -> Option<Subcomponent<'a>> {
        self.subcomponents().nth(n.checked_sub(1)?)
    }
}

/// One subcomponent.
#[derive(Debug, Clone, Copy)]
pub struct Subcomponent<'a> {
    raw: &'a str,
    ctx: Ctx,
    opaque: bool,
}

impl<'a> Subcomponent<'a> {
    leaf_methods!();

    /// The same text seen as a component (to use component helpers).
    pub fn as_component(&self) -> Component<'a> {
        Component {
            raw: self.raw,
            ctx: self.ctx,
            opaque: self.opaque,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|EHR|CLINIC|ENROLL|PORTAL|20260905120000||ADT^A04^ADT_A01|MSG1|P|2.5.1\rPID|1||123^^^CLINIC^MR~456^^^SSA^SS||Doe&van^Jane^Q||19800101|F\r\rOBX|1|CWE|a\rOBX|2|CWE|b\r";

    #[test]
    fn msh_numbering() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.get_raw("MSH-1"), Some("|"));
        assert_eq!(m.get_raw("MSH-2"), Some("^~\\&"));
        assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&"));
        assert_eq!(m.get("MSH-3").as_deref(), Some("EHR"));
        assert_eq!(m.get("MSH-9-2").as_deref(), Some("A04"));
        assert_eq!(m.get("MSH-12").as_deref(), Some("2.5.1"));
        assert_eq!(m.get_raw("MSH-13"), None);
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field_count(), 12);
        let table = msh.field_table();
        assert_eq!(table.len(), 12);
        for n in 1..=13 {
            assert_eq!(
                table.field(n).map(|f| (f.raw(), f.number())),
                msh.field(n).map(|f| (f.raw(), f.number()))
            );
        }
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.fields().count(), pid.field_count());
        assert_eq!(pid.fields().nth(4).unwrap().raw(), "Doe&van^Jane^Q");
    }

    #[test]
    fn levels() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.get("PID-3(2)-1").as_deref(), Some("456"));
        assert_eq!(m.get("PID-5-1-2").as_deref(), Some("van"));
        assert_eq!(m.get("PID-5-1").as_deref(), Some("Doe&van"));
        assert_eq!(m.get_raw("PID-4"), Some(""));
        assert_eq!(m.get("PID-4"), None);
        assert_eq!(m.get("OBX(2)-3").as_deref(), Some("b"));
        let pid = m.segment("PID").unwrap();
        let reps: Vec<_> = pid
            .field(3)
            .unwrap()
            .repetitions()
            .map(|r| r.raw())
            .collect();
        assert_eq!(reps, ["123^^^CLINIC^MR", "456^^^SSA^SS"]);
        assert_eq!(
            m.segments("OBX")
                .map(|s| s.occurrence())
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(m.segment_count(), 4);
    }

    #[test]
    fn errors_have_positions() {
        let e = Message::parse("PID|1").unwrap_err();
        assert_eq!((e.line, e.segment.as_str()), (1, "PID"));
        let e = Message::parse("MSH|^~\\|A").unwrap_err();
        assert_eq!(e.field, Some(2));
        let e = Message::parse("MSH|^~\\&|A\rPID|1\rxx|2").unwrap_err();
        assert_eq!(e.line, 3);
        let e = Message::parse("MSH|^~\\&|A\rMSH|^~\\&|B").unwrap_err();
        assert_eq!((e.line, e.occurrence), (2, 2));
        assert_eq!(Message::parse(" \r\n").unwrap_err().line, 0);
    }
}
