//! Arbitrary bytes through decoding, parsing, every accessor, the mapping
//! and the ACK: nothing may panic, and the ACK must always parse.
#![no_main]

use enroll_hl7::parse::{Message, decode};
use enroll_hl7::{BirthSexSource, MappingOptions, process};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = MappingOptions {
        birth_sex_source: if data.first().is_some_and(|b| b & 1 == 1) {
            BirthSexSource::Pid8Only
        } else {
            BirthSexSource::ObxThenPid8
        },
        mrn_assigning_authority: data
            .first()
            .is_some_and(|b| b & 2 == 2)
            .then(|| "NORTHCLINIC".to_string()),
    };
    let inbound = process(data, &options);
    let ack = inbound.ack("FUZZ1", "20260101000000");
    let parsed = Message::parse(ack.as_str()).expect("an ACK always parses");
    if let Some(header) = &inbound.header {
        let echoed = parsed.get("MSA-2").map(|s| s.into_owned()).unwrap_or_default();
        // `""` is HL7's explicit null: echoed as sent, it reads back empty.
        let sent = if header.control_id == "\"\"" { "" } else { header.control_id.as_str() };
        assert_eq!(echoed, sent, "MSA-2 echoes MSH-10");
    }
    let _ = ack.to_bytes();

    let decoded = decode(data);
    if let Ok(msg) = Message::parse(&decoded.text) {
        for segment in msg.all_segments() {
            let table = segment.field_table();
            for field in segment.fields() {
                assert_eq!(table.field(field.number()).map(|f| f.raw()), Some(field.raw()));
                let _ = field.value();
                for repetition in field.repetitions() {
                    let _: [_; 12] = repetition.component_array();
                    for component in repetition.components() {
                        for sub in component.subcomponents() {
                            let _ = sub.text();
                        }
                    }
                }
            }
        }
        for path in ["PID-5-2", "MSH-9(2)-1", "OBX(2)-5-1-1", "PID-13[3]-4", "MSH-2", "MSH-1"] {
            let _ = msg.get(path);
        }
    }
});
