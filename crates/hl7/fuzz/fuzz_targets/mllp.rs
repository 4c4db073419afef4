//! Arbitrary bytes, cut at arbitrary points, through the MLLP decoder:
//! nothing may panic and no frame may exceed the maximum.
#![no_main]

use bytes::BytesMut;
use enroll_hl7::MllpCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let max_len = usize::from(control) * 4;
    let chunk = usize::from(control % 17) + 1;
    let mut codec = MllpCodec::new(max_len);
    let mut buf = BytesMut::new();
    let check = |item: Result<bytes::Bytes, enroll_hl7::MllpError>| {
        if let Ok(frame) = item {
            assert!(frame.len() <= max_len);
            let _ = enroll_hl7::process(&frame, &Default::default());
        }
    };
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).expect("no I/O error") {
            check(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("no I/O error") {
        check(item);
    }
});
