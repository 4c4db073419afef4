//! MLLP framing: `0x0B <message> 0x1C 0x0D`, as a tokio-util codec.
//!
//! Decoding is lenient where it costs nothing and strict where it protects
//! us: bytes before a start byte are skipped (a `0x0D` after an end byte
//! among them); a frame ends at `0x1C` whether or not the `0x0D` follows; a
//! frame may arrive in any number of pieces and several frames in one read.
//! A frame longer than the maximum is never buffered whole: its first bytes
//! (up to [`HEAD_LEN`], so the caller can still read its MSH and answer AR)
//! are kept, the rest is dropped until its end marker, and one
//! [`MllpError::TooLarge`] item reports it; the frames after it decode as
//! usual. A start byte inside a frame (the sender gave up on a frame and
//! began a new one) reports the cut frame as [`MllpError::Incomplete`] and
//! starts over, and so does the end of the stream in the middle of a frame.
//!
//! Items are `Result<Bytes, MllpError>`: a bad frame is a value in the
//! stream, not the end of it. The codec's own `Error` is only `io::Error`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio_util::codec::{Decoder, Encoder};

/// Start of a frame (VT).
pub const START: u8 = 0x0B;
/// End of a frame (FS), followed by [`CR`].
pub const END: u8 = 0x1C;
/// Carriage return after [`END`].
pub const CR: u8 = 0x0D;
/// The default maximum message size: 1 MiB.
pub const DEFAULT_MAX_LEN: usize = 1024 * 1024;
/// How much of a bad frame is kept for the caller.
pub const HEAD_LEN: usize = 4096;

/// A frame that was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MllpError {
    /// The frame was longer than the maximum; it was dropped.
    #[error("MLLP frame of {size} bytes is larger than the maximum of {max_len}")]
    TooLarge {
        /// Its length (message bytes, without the framing).
        size: usize,
        /// The maximum.
        max_len: usize,
        /// Its first bytes (at most [`HEAD_LEN`] and the maximum).
        head: Bytes,
    },
    /// The frame was cut off by a new start byte or the end of the stream.
    #[error("incomplete MLLP frame of {size} bytes")]
    Incomplete {
        /// How many bytes it had.
        size: usize,
        /// Its first bytes (at most [`HEAD_LEN`]).
        head: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start byte.
    Seeking,
    /// In a frame; `scanned` bytes of the buffer hold neither marker.
    InFrame { scanned: usize },
    /// Dropping an oversized frame until its end.
    Discarding { size: usize },
}

/// The MLLP codec. Decodes `Result<Bytes, MllpError>` items; encodes any
/// `AsRef<[u8]>` (a message must not contain 0x0B or 0x1C).
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_len: usize,
    state: State,
    head: Bytes,
}

impl Default for MllpCodec {
    fn default() -> Self {
        MllpCodec::new(DEFAULT_MAX_LEN)
    }
}

impl MllpCodec {
    /// A codec that accepts messages of at most `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        MllpCodec {
            max_len,
            state: State::Seeking,
            head: Bytes::new(),
        }
    }

    /// The maximum message size.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    fn head_of(&self, bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&bytes[..bytes.len().min(HEAD_LEN).min(self.max_len)])
    }

    fn too_large(&mut self, size: usize) -> MllpError {
        MllpError::TooLarge {
            size,
            max_len: self.max_len,
            head: std::mem::take(&mut self.head),
        }
    }
}

impl Decoder for MllpCodec {
    type Item = Result<Bytes, MllpError>;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        loop {
            match self.state {
                State::Seeking => match memchr::memchr(START, buf) {
                    Some(p) => {
                        buf.advance(p + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => {
                    match memchr::memchr2(START, END, &buf[scanned..]).map(|p| p + scanned) {
                        Some(p) if buf[p] == END => {
                            let frame = buf.split_to(p).freeze();
                            buf.advance(1);
                            self.state = State::Seeking;
                            if frame.len() > self.max_len {
                                self.head = self.head_of(&frame);
                                return Ok(Some(Err(self.too_large(frame.len()))));
                            }
                            return Ok(Some(Ok(frame)));
                        }
                        Some(p) => {
                            // A new start byte: the frame so far was cut off.
                            let head = self.head_of(&buf[..p]);
                            buf.advance(p + 1);
                            self.state = State::InFrame { scanned: 0 };
                            if p > self.max_len {
                                self.head = head;
                                return Ok(Some(Err(self.too_large(p))));
                            }
                            return Ok(Some(Err(MllpError::Incomplete { size: p, head })));
                        }
                        None if buf.len() > self.max_len => {
                            self.head = self.head_of(buf);
                            self.state = State::Discarding { size: buf.len() };
                            buf.clear();
                            return Ok(None);
                        }
                        None => {
                            self.state = State::InFrame { scanned: buf.len() };
                            return Ok(None);
                        }
                    }
                }
                State::Discarding { size } => match memchr::memchr2(START, END, buf) {
                    Some(p) => {
                        let restart = buf[p] == START;
                        buf.advance(p + 1);
                        self.state = if restart {
                            State::InFrame { scanned: 0 }
                        } else {
                            State::Seeking
                        };
                        return Ok(Some(Err(self.too_large(size + p))));
                    }
                    None => {
                        self.state = State::Discarding {
                            size: size + buf.len(),
                        };
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        let item = match self.state {
            State::Seeking => None,
            State::InFrame { .. } => Some(Err(MllpError::Incomplete {
                size: buf.len(),
                head: self.head_of(buf),
            })),
            State::Discarding { size } => Some(Err(self.too_large(size))),
        };
        buf.clear();
        self.state = State::Seeking;
        Ok(item)
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = io::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), io::Error> {
        let message = item.as_ref();
        if memchr::memchr2(START, END, message).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an MLLP message cannot contain 0x0B or 0x1C",
            ));
        }
        dst.reserve(message.len() + 3);
        dst.put_u8(START);
        dst.put_slice(message);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<Result<Bytes, MllpError>> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn back_to_back_and_stray() {
        let mut c = MllpCodec::new(100);
        let mut buf = BytesMut::from(&b"junk\x0bA\x1c\x0d\r\n\x0bB\x1c\x0d"[..]);
        let items = drain(&mut c, &mut buf);
        assert_eq!(items, vec![Ok(Bytes::from("A")), Ok(Bytes::from("B"))]);
    }

    #[test]
    fn oversize_keeps_sync() {
        let mut c = MllpCodec::new(4);
        let mut buf = BytesMut::from(&b"\x0b0123456789"[..]);
        assert!(drain(&mut c, &mut buf).is_empty());
        buf.extend_from_slice(b"abc\x1c\x0d\x0bok\x1c\x0d");
        let items = drain(&mut c, &mut buf);
        assert_eq!(items.len(), 2);
        assert!(
            matches!(&items[0], Err(MllpError::TooLarge { size: 13, head, .. }) if head == "0123")
        );
        assert_eq!(items[1], Ok(Bytes::from("ok")));
    }
}
