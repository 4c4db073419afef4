//! Paths such as `PID-5-2` that address one value of a message.

use std::fmt;

/// A parsed path: `SEG[(occurrence)]-field[(repetition)][-component[-subcomponent]]`.
///
/// Every number is one-based. Components and subcomponents may be separated
/// by `-` or `.`, and an occurrence or repetition may be written `(n)` or
/// `[n]`: `PID-5-2`, `PID-5.2`, `PID-3(2)-1`, `OBX[2]-5`, `PID-13(3)-4`.
/// Without a repetition, a component path reads the first repetition and a
/// field path reads the whole field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Segment name, e.g. `*b"PID"`.
    pub segment: [u8; 3],
    /// Which segment of that name (1 = the first).
    pub occurrence: usize,
    /// Field number (HL7 numbering: `MSH-9` is the message type).
    pub field: usize,
    /// Repetition, when given.
    pub repetition: Option<usize>,
    /// Component, when given.
    pub component: Option<usize>,
    /// Subcomponent, when given (needs a component).
    pub subcomponent: Option<usize>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HL7 path {path:?}: {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Path {
    /// Parse a path; see [`Path`] for the syntax.
    pub fn parse(text: &str) -> Result<Path, PathError> {
        let err = |reason| PathError {
            path: text.to_string(),
            reason,
        };
        let b = text.as_bytes();
        if b.len() < 3 || !super::is_segment_name(&b[..3]) {
            return Err(err("a path starts with a segment name like PID"));
        }
        let segment = [b[0], b[1], b[2]];
        let mut pos = 3;
        let occurrence = index_suffix(b, &mut pos).map_err(err)?.unwrap_or(1);
        if b.get(pos) != Some(&b'-') {
            return Err(err("expected '-' and a field number after the segment"));
        }
        pos += 1;
        let field = number(b, &mut pos).ok_or_else(|| err("expected a field number"))?;
        let repetition = index_suffix(b, &mut pos).map_err(err)?;
        let mut parts = [None, None];
        for slot in &mut parts {
            match b.get(pos) {
                None => break,
                Some(b'-' | b'.') => {
                    pos += 1;
                    *slot = Some(number(b, &mut pos).ok_or_else(|| err("expected a number"))?);
                }
                Some(_) => return Err(err("unexpected character")),
            }
        }
        if pos != b.len() {
            return Err(err("unexpected text at the end"));
        }
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component: parts[0],
            subcomponent: parts[1],
        })
    }

    /// The segment name as text.
    pub fn segment_name(&self) -> &str {
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment_name())?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(r) = self.repetition {
            write!(f, "({r})")?;
        }
        if let Some(c) = self.component {
            write!(f, "-{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// A positive decimal number at `pos` (at most 6 digits).
fn number(b: &[u8], pos: &mut usize) -> Option<usize> {
    let start = *pos;
    while *pos < b.len() && b[*pos].is_ascii_digit() && *pos - start < 6 {
        *pos += 1;
    }
    let n = std::str::from_utf8(&b[start..*pos]).ok()?.parse().ok()?;
    (n > 0).then_some(n)
}

/// An optional `(n)` or `[n]` at `pos`.
fn index_suffix(b: &[u8], pos: &mut usize) -> Result<Option<usize>, &'static str> {
    let close = match b.get(*pos) {
        Some(b'(') => b')',
        Some(b'[') => b']',
        _ => return Ok(None),
    };
    *pos += 1;
    let n = number(b, pos).ok_or("expected a positive number in brackets")?;
    if b.get(*pos) != Some(&close) {
        return Err("unclosed bracket");
    }
    *pos += 1;
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = Path::parse("PID-5-2").unwrap();
        assert_eq!((p.field, p.component, p.repetition), (5, Some(2), None));
        assert_eq!(Path::parse("PID-5.2").unwrap(), p);
        let p = Path::parse("OBX(2)-5-1-3").unwrap();
        assert_eq!(p.occurrence, 2);
        assert_eq!(p.subcomponent, Some(3));
        let p = Path::parse("PID-13[3]-4").unwrap();
        assert_eq!((p.repetition, p.component), (Some(3), Some(4)));
        assert_eq!(p.to_string(), "PID-13(3)-4");
        for bad in [
            "",
            "PI",
            "pid-5",
            "PID",
            "PID-",
            "PID-0",
            "PID-5-",
            "PID-5x",
            "PID(0)-1",
            "PID-1(2",
            "PID-1-2-3-4",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
