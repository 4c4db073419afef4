//! enroll-hl7 end to end: sample messages for every event, escapes,
//! repetitions, custom delimiters, character sets, errors and their ACKs,
//! the MLLP codec (with 3 MB of garbage), and properties on arbitrary bytes.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use enroll_core::{
    AppointmentStatus, Field as DemographicField, IfKnown, IntakeEvent, PatientChange,
};
use enroll_hl7::parse::{Charset, Message, decode};
use enroll_hl7::{
    AckCode, BirthSexSource, ErrorCode, Header, Hl7Error, MappingOptions, MllpCodec, MllpError,
    build_ack, process,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Segments joined with the standard terminator.
fn msg(segments: &[&str]) -> String {
    let mut s = segments.join("\r");
    s.push('\r');
    s
}

// ---------------------------------------------------------------------------
// Sample messages
// ---------------------------------------------------------------------------

const MSH_A04: &str = "MSH|^~\\&|EPIC|NORTHCLINIC^1.2.840.114350.1^ISO|ENROLL|PORTAL|20260905120000-0500||ADT^A04^ADT_A01|MSG00001|P|2.5.1|||AL|NE||UNICODE UTF-8";
const PID_FULL: &str = "PID|1||123456^^^NORTHCLINIC^MR~987654321^^^SSA^SS||O'Brien^Mary^Ann^^Ms.^^L~Smith^Mary^^^^^M||19850317|F|||123 Main St^Apt 4B^Springfield^IL^62701-1234^USA^H~PO Box 9^^Springfield^IL^62799^USA^M||^PRN^PH^^1^217^5551234~^NET^Internet^mary.obrien@example.com~^PRN^CP^^1^217^5559876|^WPN^PH^^1^217^5550000|en^English^ISO639|M|CAT|ACC123";

fn a04_registration() -> String {
    msg(&[
        MSH_A04,
        "EVN|A04|20260905120000|||JSMITH^Smith^John",
        PID_FULL,
        "PD1|||North Clinic^^1234",
        "NK1|1|O'Brien^John|SPO^Spouse|123 Main St^^Springfield^IL^62701|^PRN^PH^^1^217^5551234",
        "PV1|1|O|CLINIC^101^1^NORTHCLINIC",
        "OBX|1|CWE|76689-9^Sex assigned at birth^LN||F^Female^HL7||||||F",
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives",
    ])
}

/// A04 with a visit number: a new encounter.
fn a04_visit() -> String {
    let pv1 = format!(
        "PV1|1|O|CLINIC^101^1^NORTHCLINIC||||1234^Welby^Marcus^^^Dr.|||MED||||1|||1234^Welby^Marcus^^^Dr.|OP|V000123^^^NORTHCLINIC^VN{}20260905110000",
        "|".repeat(25)
    );
    a04_registration().replace("PV1|1|O|CLINIC^101^1^NORTHCLINIC", &pv1)
}

/// v2.3 update, with escapes and old-style XTN (number and email in XTN-1).
fn a08_v23() -> String {
    msg(&[
        "MSH|^~\\&|CERNER|EASTCLINIC|ENROLL|PORTAL|20260905121500||ADT^A08|CTRL\\F\\7|P|2.3",
        "EVN|A08|20260905121500",
        "PID|1|EXT99|777^^^EASTCLINIC^MR||Smith\\T\\Jones^Ren\\XC3A9\\^^^^^L||19700704000000|U|||9 Elm\\.br\\Rear^^Boston^MA^02118||(617)555-0100^PRN^PH~renee@example.org^NET^Internet~(617) 555-0199^ORN^CP|||||||||||||||||||||",
        "PV1|1|O",
    ])
}

/// v2.4 A28 with `$` as the component separator.
fn a28_dollar() -> String {
    msg(&[
        "MSH|$~\\&|ATHENA|SOUTHCLINIC|ENROLL|PORTAL|20260905130000||ADT$A28$ADT_A05|A28-1|P|2.4",
        "EVN|A28|20260905130000",
        "PID|1||555$$$SOUTHCLINIC$MR||Nguyen$Linh$$$$$L||19900101|F|||1 Oak Rd$$Austin$TX$78701||$PRN$CP$$1$512$5550101~$NET$Internet$linh@example.com|||||||||||||||||",
    ])
}

/// v2.6 A31 with `!` as the component separator and `%` for subcomponents.
fn a31_bang() -> String {
    msg(&[
        "MSH|!~\\%|NEXTGEN|WESTCLINIC|ENROLL|PORTAL|20260905140000||ADT!A31!ADT_A05|A31-1|P|2.6",
        "EVN|A31|20260905140000",
        "PID|1||W-42!!!WESTCLINIC%2.16.840.1.113883.3.1%ISO!MR||Garc\\XC3AD\\a%de!Ana!!!!!L||19751231|F|||5 Pine St!!Denver!CO!80202||!NET!Internet!ana.garcia@example.com~!PRN!CP!!1!303!5550123||spa!Spanish!ISO639",
    ])
}

/// A01 admission with PV1-19.
fn a01_admit() -> String {
    msg(&[
        "MSH|^~\\&|EPIC|NORTHCLINIC|ENROLL|PORTAL|20260906083000||ADT^A01^ADT_A01|MSG00002|P|2.5.1",
        "EVN|A01|20260906083000",
        "PID|1||123456^^^NORTHCLINIC^MR||O'Brien^Mary||19850317|F|||123 Main St^^Springfield^IL^62701",
        "PV1|1|I|W^389^1^NORTHCLINIC||||12345^Morgan^Rex|||MED||||2||||IP|V000456^^^NORTHCLINIC^VN|||||||||||||||||||||||||20260906082500",
    ])
}

/// A40: 654321 merges into 123456.
fn a40_merge() -> String {
    msg(&[
        "MSH|^~\\&|EPIC|NORTHCLINIC|ENROLL|PORTAL|20260906090000||ADT^A40^ADT_A39|MSG00003|P|2.5.1",
        "EVN|A40|20260906090000",
        "PID|1||123456^^^NORTHCLINIC^MR||O'Brien^Mary||19850317|F",
        "MRG|654321^^^NORTHCLINIC^MR",
    ])
}

/// S12 new appointment.
fn s12_new() -> String {
    msg(&[
        "MSH|^~\\&|EPIC|NORTHCLINIC|ENROLL|PORTAL|20260906100000||SIU^S12^SIU_S12|MSG00004|P|2.5.1",
        "SCH|10345^SCHED|987^EPIC|||||CHECKUP^Annual checkup|NORMAL|30|MIN|^^30^20260910140000^20260910143000|||||1234^Welby^Marcus|||||1234^Welby^Marcus|||||Booked",
        "PID|1||123456^^^NORTHCLINIC^MR||O'Brien^Mary||19850317|F",
        "RGS|1",
        "AIS|1||99213^Office visit|20260910140000|||30|MIN",
    ])
}

/// S13 reschedule in v2.8, with the truncation character and PID-40.
fn s13_v28() -> String {
    let pid = format!(
        "PID|1||123456^^^NORTHCLINIC^MR||O'Brien^Mary||19850317|F|||Apt #4 1 Main\\P\\^^Springfield^IL^62701{}^NET^Internet^mary@example.net~^PRN^CP^^1^217^5550000",
        "|".repeat(29)
    );
    msg(&[
        "MSH|^~\\&#|EPIC|NORTHCLINIC|ENROLL|PORTAL|20260907100000||SIU^S13^SIU_S12|MSG00005|P|2.8",
        "SCH||987^EPIC|||||CHECKUP|NORMAL|30|MIN",
        &pid,
        "AIS|1||99213^Office visit|20260911090000",
    ])
}

fn options() -> MappingOptions {
    MappingOptions::default()
}

fn patient(event: &IntakeEvent) -> &PatientChange {
    event.patient()
}

/// A registration that updates a known MRN (what A04 and A28 mean).
fn registers(event: &IntakeEvent) -> bool {
    matches!(
        event,
        IntakeEvent::Register {
            if_known: IfKnown::Update,
            ..
        }
    )
}

// ---------------------------------------------------------------------------
// Events: table-driven
// ---------------------------------------------------------------------------

#[test]
fn every_event_maps() {
    struct Case {
        name: &'static str,
        message: String,
        check: fn(&IntakeEvent),
    }
    let cases = vec![
        Case {
            name: "A04 registration",
            message: a04_registration(),
            check: |e| assert!(registers(e), "{e:?}"),
        },
        Case {
            name: "A04 with a visit",
            message: a04_visit(),
            check: |e| match e {
                IntakeEvent::Encounter {
                    visit_number,
                    patient_class,
                    admitted_at,
                    ..
                } => {
                    assert_eq!(visit_number, "V000123");
                    assert_eq!(patient_class.as_deref(), Some("O"));
                    assert_eq!(admitted_at.as_deref(), Some("20260905110000"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "A08 v2.3",
            message: a08_v23(),
            check: |e| assert!(matches!(e, IntakeEvent::Update(_)), "{e:?}"),
        },
        Case {
            name: "A28 with $",
            message: a28_dollar(),
            check: |e| assert!(registers(e), "{e:?}"),
        },
        Case {
            name: "A31 with !",
            message: a31_bang(),
            check: |e| assert!(matches!(e, IntakeEvent::Update(_)), "{e:?}"),
        },
        Case {
            name: "A01 admission",
            message: a01_admit(),
            check: |e| match e {
                IntakeEvent::Encounter {
                    visit_number,
                    patient_class,
                    ..
                } => {
                    assert_eq!(visit_number, "V000456");
                    assert_eq!(patient_class.as_deref(), Some("I"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "A40 merge",
            message: a40_merge(),
            check: |e| match e {
                IntakeEvent::Merge {
                    patient,
                    merged_mrn,
                    merged_assigning_authority,
                } => {
                    assert_eq!(patient.mrn, "123456", "the surviving MRN");
                    assert_eq!(merged_mrn, "654321");
                    assert_eq!(patient.assigning_authority.as_deref(), Some("NORTHCLINIC"));
                    assert_eq!(merged_assigning_authority.as_deref(), Some("NORTHCLINIC"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "S12 appointment",
            message: s12_new(),
            check: |e| match e {
                IntakeEvent::Appointment {
                    appointment_id,
                    status: AppointmentStatus::Booked,
                    starts_at,
                    ..
                } => {
                    assert_eq!(appointment_id, "987");
                    assert_eq!(starts_at.as_deref(), Some("20260910140000"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "S13 reschedule",
            message: s13_v28(),
            check: |e| match e {
                IntakeEvent::Appointment {
                    appointment_id,
                    status,
                    starts_at,
                    ..
                } => {
                    assert_eq!(appointment_id, "987");
                    assert_eq!(*status, AppointmentStatus::Rescheduled);
                    assert_eq!(starts_at.as_deref(), Some("20260911090000"));
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "S14 modification",
            message: s12_new().replace("SIU^S12^SIU_S12", "SIU^S14^SIU_S12"),
            check: |e| match e {
                IntakeEvent::Appointment { status, .. } => {
                    assert_eq!(*status, AppointmentStatus::Modified);
                }
                other => panic!("{other:?}"),
            },
        },
        Case {
            name: "S15 cancellation",
            message: s12_new().replace("SIU^S12^SIU_S12", "SIU^S15^SIU_S12"),
            check: |e| match e {
                IntakeEvent::Appointment { status, .. } => {
                    assert_eq!(*status, AppointmentStatus::Cancelled);
                }
                other => panic!("{other:?}"),
            },
        },
    ];
    for case in cases {
        let inbound = process(case.message.as_bytes(), &options());
        let event = inbound
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        (case.check)(event);
        let ack = inbound.ack("ACK1", "20260905120001");
        assert_eq!(ack.code(), AckCode::AA, "{}", case.name);
        let header = inbound.header.as_ref().unwrap();
        assert!(
            ack.as_str()
                .contains(&format!("MSA|AA|{}", escape_std(&header.control_id))),
            "{}: {}",
            case.name,
            ack.as_str()
        );
    }
}

/// The control ids of these samples only need `|` escaped.
fn escape_std(s: &str) -> String {
    s.replace('|', "\\F\\")
}

#[test]
fn a04_fields_repetitions_and_header() {
    let inbound = process(a04_registration().as_bytes(), &options());
    let header = inbound.header.clone().unwrap();
    assert_eq!(header.sending_application.namespace_id, "EPIC");
    assert_eq!(header.sending_facility.namespace_id, "NORTHCLINIC");
    assert_eq!(header.sending_facility.universal_id, "1.2.840.114350.1");
    assert_eq!(header.receiving_application.namespace_id, "ENROLL");
    assert_eq!(header.receiving_facility.namespace_id, "PORTAL");
    assert_eq!(header.control_id, "MSG00001");
    assert_eq!(header.message_type, "ADT");
    assert_eq!(header.trigger_event, "A04");
    assert_eq!(header.message_structure, "ADT_A01");
    assert_eq!(header.version, "2.5.1");
    assert_eq!(header.charset, "UNICODE UTF-8");
    assert_eq!(inbound.charset, Charset::Utf8);

    let p = patient(inbound.result.as_ref().unwrap());
    assert_eq!(p.mrn, "123456");
    assert_eq!(p.assigning_authority.as_deref(), Some("NORTHCLINIC"));
    let d = &p.sent;
    assert_eq!(d.first_name.as_deref(), Some("Mary"));
    assert_eq!(d.last_name.as_deref(), Some("O'Brien"));
    assert_eq!(d.date_of_birth.as_deref(), Some("1985-03-17"));
    assert_eq!(d.birth_sex.as_deref(), Some("F"));
    assert_eq!(d.zip.as_deref(), Some("62701-1234"), "home address first");
    assert_eq!(d.email.as_deref(), Some("mary.obrien@example.com"));
    assert_eq!(
        d.cell_phone.as_deref(),
        Some("+12175559876"),
        "not the PRN^PH home phone"
    );
    assert_eq!(p.preferred_language.as_deref(), Some("en"));
    assert!(!p.deceased);
    assert!(p.cleared.is_empty());
}

#[test]
fn escapes_and_old_style_telecoms() {
    let inbound = process(a08_v23().as_bytes(), &options());
    let header = inbound.header.as_ref().unwrap();
    assert_eq!(header.control_id, "CTRL|7", "\\F\\ in MSH-10");
    let p = patient(inbound.result.as_ref().unwrap());
    let d = &p.sent;
    assert_eq!(
        d.last_name.as_deref(),
        Some("Smith&Jones"),
        "\\T\\ is not a split"
    );
    assert_eq!(d.first_name.as_deref(), Some("René"), "\\XC3A9\\");
    assert_eq!(d.date_of_birth.as_deref(), Some("1970-07-04"));
    assert_eq!(
        d.birth_sex.as_deref(),
        Some("UNK"),
        "PID-8 U is an explicit unknown"
    );
    assert_eq!(d.zip.as_deref(), Some("02118"));
    assert_eq!(d.email.as_deref(), Some("renee@example.org"));
    assert_eq!(d.cell_phone.as_deref(), Some("(617) 555-0199"));
    // \.br\ inside a component.
    let text = a08_v23();
    let decoded = decode(text.as_bytes());
    let m = Message::parse(&decoded.text).unwrap();
    assert_eq!(m.get("PID-11-1").as_deref(), Some("9 Elm\nRear"));
    assert_eq!(m.get("PID-2").as_deref(), Some("EXT99"));
}

#[test]
fn custom_component_separators() {
    let p = process(a28_dollar().as_bytes(), &options()).result.unwrap();
    let p = patient(&p);
    assert_eq!(p.mrn, "555");
    assert_eq!(p.sent.first_name.as_deref(), Some("Linh"));
    assert_eq!(p.sent.zip.as_deref(), Some("78701"));
    assert_eq!(p.sent.cell_phone.as_deref(), Some("+15125550101"));
    assert_eq!(p.sent.email.as_deref(), Some("linh@example.com"));

    let e = process(a31_bang().as_bytes(), &options()).result.unwrap();
    let p = patient(&e);
    assert_eq!(p.mrn, "W-42");
    assert_eq!(p.assigning_authority.as_deref(), Some("WESTCLINIC"));
    assert_eq!(
        p.sent.last_name.as_deref(),
        Some("García"),
        "subcomponent 1 of FN"
    );
    assert_eq!(p.sent.first_name.as_deref(), Some("Ana"));
    assert_eq!(p.sent.email.as_deref(), Some("ana.garcia@example.com"));
    assert_eq!(p.sent.cell_phone.as_deref(), Some("+13035550123"));
    assert_eq!(p.preferred_language.as_deref(), Some("spa"));

    // The configured assigning authority can be matched by its OID too.
    let by_oid = MappingOptions {
        mrn_assigning_authority: Some("2.16.840.1.113883.3.1".into()),
        ..options()
    };
    let e = process(a31_bang().as_bytes(), &by_oid).result.unwrap();
    assert_eq!(patient(&e).mrn, "W-42");
}

#[test]
fn truncation_character_and_pid40() {
    let text = s13_v28();
    let decoded = decode(text.as_bytes());
    let m = Message::parse(&decoded.text).unwrap();
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.delimiters().msh2(), "^~\\&#");
    assert_eq!(m.get("MSH-9-2").as_deref(), Some("S13"));
    assert_eq!(m.get("PID-11-1").as_deref(), Some("Apt #4 1 Main#"));
    assert_eq!(m.segment("PID").unwrap().field(13).unwrap().raw(), "");
    let e = process(text.as_bytes(), &options()).result.unwrap();
    let d = &patient(&e).sent;
    assert_eq!(d.email.as_deref(), Some("mary@example.net"));
    assert_eq!(d.cell_phone.as_deref(), Some("+12175550000"));
    // The ACK keeps the five encoding characters.
    let ack = process(text.as_bytes(), &options()).ack("A", "20260907100001");
    assert!(
        ack.as_str()
            .starts_with("MSH|^~\\&#|ENROLL|PORTAL|EPIC|NORTHCLINIC|")
    );
    assert!(ack.as_str().contains("|ACK^S13^ACK|A|P|2.8\r"));
}

#[test]
fn path_api() {
    let text = a04_registration();
    let decoded = decode(text.as_bytes());
    let m = Message::parse(&decoded.text).unwrap();
    assert_eq!(m.get("PID-5-2").as_deref(), Some("Mary"));
    assert_eq!(m.get("PID-5(2)-1").as_deref(), Some("Smith"));
    assert_eq!(
        m.get("PID-13[2]-4").as_deref(),
        Some("mary.obrien@example.com")
    );
    assert_eq!(m.get("PID-3-4").as_deref(), Some("NORTHCLINIC"));
    assert_eq!(m.get("MSH-4-2").as_deref(), Some("1.2.840.114350.1"));
    assert_eq!(m.get("OBX-3-1").as_deref(), Some("76689-9"));
    assert_eq!(m.get("PID-99"), None);
    assert_eq!(m.get("ZZZ-1"), None);
    assert_eq!(m.get("not a path"), None);
    let telecoms: Vec<_> = m
        .segment("PID")
        .unwrap()
        .field(13)
        .unwrap()
        .repetitions()
        .map(|r| r.text_of(2).unwrap().into_owned())
        .collect();
    assert_eq!(telecoms, ["PRN", "NET", "PRN"]);
    assert_eq!(m.segments("OBX").count(), 1);
    assert_eq!(
        m.all_segments().map(|s| s.name()).collect::<Vec<_>>(),
        ["MSH", "EVN", "PID", "PD1", "NK1", "PV1", "OBX", "AL1"]
    );
    // Zero copy: values without escapes borrow the message text.
    assert!(matches!(
        m.get("PID-5-1"),
        Some(std::borrow::Cow::Borrowed(_))
    ));
}

#[test]
fn segment_terminators_lf_and_crlf() {
    let cr = a04_visit();
    let want = process(cr.as_bytes(), &options()).result.unwrap();
    for terminator in ["\n", "\r\n", "\n\r"] {
        let text = cr.replace('\r', terminator);
        let got = process(text.as_bytes(), &options()).result.unwrap();
        assert_eq!(got, want, "{terminator:?}");
    }
    // Leading blank lines, a BOM and MLLP bytes are tolerated too.
    let framed = format!("\u{feff}\r\n\u{b}{cr}\u{1c}\r");
    assert_eq!(process(framed.as_bytes(), &options()).result.unwrap(), want);
}

// ---------------------------------------------------------------------------
// Character sets
// ---------------------------------------------------------------------------

fn latin1_message(msh18: &str) -> Vec<u8> {
    let mut bytes = format!(
        "MSH|^~\\&|MEDITECH|NORTHCLINIC|ENROLL|PORTAL|20260905120000||ADT^A08^ADT_A01|L1|P|2.5||||||{msh18}\rPID|1||42^^^NORTHCLINIC^MR||Ren"
    )
    .into_bytes();
    bytes.push(0xE9); // é in Latin-1
    bytes.extend_from_slice(b"^Andr");
    bytes.push(0xE9);
    bytes.extend_from_slice(b"||19600101|M|||^^^^01234\r");
    bytes
}

#[test]
fn latin1_declared_and_fallback() {
    let declared = process(&latin1_message("8859/1"), &options());
    assert_eq!(declared.charset, Charset::Latin1);
    assert!(!declared.latin1_fallback);
    let d = &patient(declared.result.as_ref().unwrap()).sent;
    assert_eq!(d.last_name.as_deref(), Some("René"));
    assert_eq!(d.first_name.as_deref(), Some("André"));

    let undeclared = process(&latin1_message(""), &options());
    assert!(undeclared.latin1_fallback);
    assert_eq!(undeclared.charset, Charset::Latin1);
    assert_eq!(
        patient(undeclared.result.as_ref().unwrap())
            .sent
            .last_name
            .as_deref(),
        Some("René")
    );

    // Declared UTF-8 but Latin-1 bytes: the same fallback.
    let wrong = process(&latin1_message("UNICODE UTF-8"), &options());
    assert!(wrong.latin1_fallback);

    // Real UTF-8 without MSH-18 stays UTF-8.
    let utf8 = String::from_utf8_lossy(&latin1_message(""))
        .replace('\u{fffd}', "é")
        .into_bytes();
    let inbound = process(&utf8, &options());
    assert!(!inbound.latin1_fallback);
    assert_eq!(
        patient(inbound.result.as_ref().unwrap())
            .sent
            .last_name
            .as_deref(),
        Some("René")
    );

    // A hex escape in a Latin-1 message is a Latin-1 byte.
    let escaped = String::from_utf8(latin1_message("8859/1").iter().map(|&b| b & 0x7F).collect())
        .unwrap()
        .replace("Reni", "Ren\\XE9\\");
    let inbound = process(escaped.as_bytes(), &options());
    assert_eq!(
        patient(inbound.result.as_ref().unwrap())
            .sent
            .last_name
            .as_deref(),
        Some("René")
    );

    // Other sets of table 0211 through encoding_rs.
    let mut greek =
        b"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|G1|P|2.5||||||8859/7\rPID|1||1^^^B^MR||".to_vec();
    greek.extend_from_slice(&[0xC1, 0xEB, 0xDD, 0xEE, 0xE1, 0xED, 0xE4, 0xF1, 0xEF, 0xF2]);
    greek.extend_from_slice(b"^Maria\r");
    let inbound = process(&greek, &options());
    assert_eq!(
        patient(inbound.result.as_ref().unwrap())
            .sent
            .last_name
            .as_deref(),
        Some("Αλέξανδρος")
    );

    // The ACK goes back in the sender's character set.
    let mut latin = latin1_message("8859/1");
    let at = latin.windows(11).position(|w| w == b"NORTHCLINIC").unwrap();
    latin.splice(at..at + 11, b"CLINIQUE M\xC9D".iter().copied());
    let inbound = process(&latin, &options());
    let ack = inbound.ack("X1", "20260905120001");
    assert!(ack.as_str().contains("|CLINIQUE MÉD|"));
    let bytes = ack.to_bytes();
    assert!(bytes.windows(13).any(|w| w == b"CLINIQUE M\xC9D|"));
    assert!(
        ack.as_str().contains("||||||8859/1\r"),
        "MSH-18 echoed: {}",
        ack.as_str()
    );
}

// ---------------------------------------------------------------------------
// Birth sex, identifiers, deceased, nulls, missing fields
// ---------------------------------------------------------------------------

#[test]
fn birth_sex_sources() {
    // OBX says F, PID-8 says M.
    let text = a04_registration().replace("|19850317|F|", "|19850317|M|");
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert_eq!(patient(&e).sent.birth_sex.as_deref(), Some("F"));
    let pid8 = MappingOptions {
        birth_sex_source: BirthSexSource::Pid8Only,
        ..options()
    };
    let e = process(text.as_bytes(), &pid8).result.unwrap();
    assert_eq!(patient(&e).sent.birth_sex.as_deref(), Some("M"));

    // OBX with an explicit unknown, and with a code that validation will flag.
    for (value, want) in [
        ("UNK^Unknown^NULLFL", "UNK"),
        ("ASKU", "UNK"),
        ("OTH", "OTH"),
    ] {
        let text = a04_registration().replace("F^Female^HL7", value);
        let e = process(text.as_bytes(), &options()).result.unwrap();
        assert_eq!(patient(&e).sent.birth_sex.as_deref(), Some(want));
    }
    // An empty OBX value falls back to PID-8; a different LOINC is ignored.
    for replaced in ["76689-9^Sex assigned at birth^LN||", "8302-2^Height^LN||F"] {
        let text = a04_registration()
            .replace("|19850317|F|", "|19850317|M|")
            .replace("76689-9^Sex assigned at birth^LN||F^Female^HL7", replaced);
        let e = process(text.as_bytes(), &options()).result.unwrap();
        assert_eq!(
            patient(&e).sent.birth_sex.as_deref(),
            Some("M"),
            "{replaced}"
        );
    }
    // Absent everywhere.
    let text = a40_merge().replace("|19850317|F", "|19850317|");
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert_eq!(patient(&e).sent.birth_sex, None);
}

#[test]
fn identifiers_by_assigning_authority() {
    let text = a04_registration().replace(
        "123456^^^NORTHCLINIC^MR~987654321^^^SSA^SS",
        "987654321^^^SSA^SS~A77^^^OLDSYS^PI~123456^^^NORTHCLINIC^MR",
    );
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert_eq!(patient(&e).mrn, "123456", "type MR first");
    let old = MappingOptions {
        mrn_assigning_authority: Some("oldsys".into()),
        ..options()
    };
    let e = process(text.as_bytes(), &old).result.unwrap();
    assert_eq!(patient(&e).mrn, "A77");
    assert_eq!(patient(&e).assigning_authority.as_deref(), Some("OLDSYS"));
    let other = MappingOptions {
        mrn_assigning_authority: Some("ELSEWHERE".into()),
        ..options()
    };
    let err = process(text.as_bytes(), &other).result.unwrap_err();
    assert!(
        matches!(
            err,
            Hl7Error::Field {
                segment: "PID",
                field: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.ack_code(), AckCode::AE);
    // Only an SSN: never taken as the MRN.
    let text = a04_registration().replace("123456^^^NORTHCLINIC^MR~", "");
    let err = process(text.as_bytes(), &options()).result.unwrap_err();
    assert!(matches!(
        err,
        Hl7Error::Field {
            segment: "PID",
            field: 3,
            code: ErrorCode::RequiredFieldMissing,
            ..
        }
    ));
}

#[test]
fn deceased_and_nulls() {
    let pid = format!("{PID_FULL}{}20260101120000|Y", "|".repeat(11));
    let text = msg(&[MSH_A04, &pid]);
    let decoded = decode(text.as_bytes());
    assert_eq!(
        Message::parse(&decoded.text)
            .unwrap()
            .get("PID-30")
            .as_deref(),
        Some("Y")
    );
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert!(patient(&e).deceased);
    assert_eq!(
        patient(&e).deceased_date,
        Some(jiff::civil::date(2026, 1, 1))
    );
    // A date without the indicator also means deceased; N overrides.
    let no_flag = msg(&[MSH_A04, &format!("{PID_FULL}{}20260101", "|".repeat(11))]);
    assert!(patient(&process(no_flag.as_bytes(), &options()).result.unwrap()).deceased);
    let flag_n = msg(&[MSH_A04, &format!("{PID_FULL}{}|N", "|".repeat(11))]);
    assert!(!patient(&process(flag_n.as_bytes(), &options()).result.unwrap()).deceased);
    // The indicator decides when it is sent: Y without a date, N despite one.
    let flag_y = msg(&[MSH_A04, &format!("{PID_FULL}{}|y", "|".repeat(11))]);
    assert!(patient(&process(flag_y.as_bytes(), &options()).result.unwrap()).deceased);
    let dated_n = msg(&[MSH_A04, &format!("{PID_FULL}{}20260101|N", "|".repeat(11))]);
    let dated_n = process(dated_n.as_bytes(), &options()).result.unwrap();
    assert!(!patient(&dated_n).deceased);
    assert_eq!(
        patient(&dated_n).deceased_date,
        Some(jiff::civil::date(2026, 1, 1))
    );
    // A bad PID-29.
    let bad = msg(&[
        MSH_A04,
        &format!("{PID_FULL}{}2026-01-01|Y", "|".repeat(11)),
    ]);
    let err = process(bad.as_bytes(), &options()).result.unwrap_err();
    assert!(matches!(
        err,
        Hl7Error::Field {
            segment: "PID",
            field: 29,
            reason: "not a date",
            ..
        }
    ));

    // HL7 nulls ("") ask to delete a value.
    let text = msg(&[
        MSH_A04,
        "PID|1||123456^^^NORTHCLINIC^MR||\"\"||\"\"|F|||\"\"||\"\"",
    ]);
    let e = process(text.as_bytes(), &options()).result.unwrap();
    let p = patient(&e);
    assert_eq!(p.sent.first_name, None);
    assert_eq!(p.sent.date_of_birth, None);
    assert_eq!(
        p.cleared,
        [
            DemographicField::FirstName,
            DemographicField::LastName,
            DemographicField::DateOfBirth,
            DemographicField::Zip,
            DemographicField::Email,
            DemographicField::CellPhone
        ]
    );
}

#[test]
fn missing_fields_are_none() {
    let text = msg(&[
        "MSH|^~\\&|EHR|CLINIC|||20260905||ADT^A28|M1|P|2.5",
        "PID|1||1^^^CLINIC^MR",
    ]);
    let e = process(text.as_bytes(), &options()).result.unwrap();
    let p = patient(&e);
    assert_eq!(p.sent, enroll_core::Demographics::default());
    assert_eq!(p.preferred_language, None);
    // A year-only DOB is valid HL7 but not a full date: not given.
    let text = text.replace("1^^^CLINIC^MR", "1^^^CLINIC^MR||Doe^J||1985");
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert_eq!(patient(&e).sent.date_of_birth, None);
    // Trigger from EVN-1 when MSH-9 has none (old senders).
    let text = msg(&[
        "MSH|^~\\&|EHR|CLINIC|||20260905||ADT|M2|P|2.3",
        "EVN|A31|20260905",
        "PID|1||1^^^CLINIC^MR",
    ]);
    assert!(matches!(
        process(text.as_bytes(), &options()).result.unwrap(),
        IntakeEvent::Update(_)
    ));
}

// ---------------------------------------------------------------------------
// Errors and their ACKs
// ---------------------------------------------------------------------------

#[test]
fn wrong_dates_are_ae_with_err() {
    for dob in ["19851345", "1985-03-17", "19850229", "March", "198503170"] {
        let text = a04_registration().replace("|19850317|", &format!("|{dob}|"));
        let inbound = process(text.as_bytes(), &options());
        let err = inbound.result.as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                Hl7Error::Field {
                    segment: "PID",
                    field: 7,
                    reason: "not a date",
                    ..
                }
            ),
            "{dob}: {err:?}"
        );
        let ack = inbound.ack("ACK9", "20260905120001");
        assert_eq!(ack.code(), AckCode::AE);
        assert_eq!(
            ack.as_str(),
            "MSH|^~\\&|ENROLL|PORTAL|EPIC|NORTHCLINIC^1.2.840.114350.1^ISO|20260905120001||ACK^A04^ACK|ACK9|P|2.5.1||||||UNICODE UTF-8\r\
             MSA|AE|MSG00001|PID-7: not a date\r\
             ERR||PID^1^7|102^Data type error^HL70357|E||||PID-7: not a date\r"
        );
    }
}

#[test]
fn rejections_are_ar() {
    struct Case {
        name: &'static str,
        message: String,
        code: u16,
        location: &'static str,
        msa2: &'static str,
    }
    let cases = [
        Case {
            name: "unknown message type",
            message: a04_registration().replace("ADT^A04^ADT_A01", "ORU^R01^ORU_R01"),
            code: 200,
            location: "MSH^1^9",
            msa2: "MSG00001",
        },
        Case {
            name: "unsupported ADT event",
            message: a04_registration().replace("ADT^A04^ADT_A01", "ADT^A03^ADT_A03"),
            code: 201,
            location: "MSH^1^9",
            msa2: "MSG00001",
        },
        Case {
            name: "unsupported version",
            message: a04_registration().replace("|2.5.1|", "|2.9|"),
            code: 203,
            location: "MSH^1^12",
            msa2: "MSG00001",
        },
        Case {
            name: "a bad segment later on",
            message: a04_registration().replace("AL1|", "al1|"),
            code: 100,
            location: "",
            msa2: "MSG00001",
        },
        Case {
            name: "no control id",
            message: a04_registration().replace("|MSG00001|", "||"),
            code: 101,
            location: "MSH^1^10",
            msa2: "",
        },
        Case {
            name: "bad encoding characters",
            message: a04_registration().replace("MSH|^~\\&|", "MSH|^^\\&|"),
            code: 102,
            location: "MSH^1^2",
            // The field separator is readable: MSH-10 is echoed all the same.
            msa2: "MSG00001",
        },
    ];
    for case in cases {
        let inbound = process(case.message.as_bytes(), &options());
        let err = inbound.result.as_ref().unwrap_err();
        assert_eq!(err.ack_code(), AckCode::AR, "{}", case.name);
        assert_eq!(err.error_code().code(), case.code, "{}", case.name);
        let ack = inbound.ack("R1", "20260905120001");
        let text = ack.as_str();
        assert!(
            text.contains(&format!("\rMSA|AR|{}|", case.msa2)),
            "{}: {text}",
            case.name
        );
        assert!(
            text.contains(&format!("\rERR||{}|{}^", case.location, case.code)),
            "{}: {text}",
            case.name
        );
        // The ACK itself parses, and swaps sender and receiver when MSH was read.
        let ack_msg = Message::parse(text).unwrap();
        assert_eq!(ack_msg.get("MSH-9-1").as_deref(), Some("ACK"));
        if inbound.header.is_some() {
            assert_eq!(
                ack_msg.get("MSH-5").as_deref(),
                Some("EPIC"),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn unparseable_messages() {
    for garbage in [
        "",
        "hello",
        "PID|1||2",
        "MSH",
        "MSH|",
        "\u{b}\u{1c}\r",
        "MSH|^~\\&\rPID|1\rpid|2",
    ] {
        let inbound = process(garbage.as_bytes(), &options());
        let err = inbound.result.as_ref().unwrap_err();
        assert!(matches!(err, Hl7Error::Parse(_)), "{garbage:?}: {err:?}");
        let ack = inbound.ack("R2", "20260905120001");
        assert_eq!(ack.code(), AckCode::AR);
        assert!(Message::parse(ack.as_str()).is_ok());
    }
    // A bare MSH parses but has no message type: rejected at MSH-9.
    let err = process(b"MSH|^~\\&", &options()).result.unwrap_err();
    assert!(matches!(
        err,
        Hl7Error::Field {
            segment: "MSH",
            field: 9,
            ..
        }
    ));
    assert_eq!(err.ack_code(), AckCode::AR);
    let inbound = process(b"hello", &options());
    assert!(inbound.header.is_none());
    assert_eq!(
        inbound.ack("R3", "20260905120001").as_str(),
        "MSH|^~\\&|||||20260905120001||ACK|R3|P|2.5.1\r\
         MSA|AR||cannot parse: segment 1: the message does not start with an MSH segment\r\
         ERR|||100^Segment sequence error^HL70357|E||||cannot parse: segment 1: the message does not start with an MSH segment\r"
    );
    // A second MSH (two messages in one frame) is rejected.
    let two = format!("{}{}", a40_merge(), a01_admit());
    let err = process(two.as_bytes(), &options()).result.unwrap_err();
    assert!(matches!(&err, Hl7Error::Parse(e) if e.segment == "MSH" && e.occurrence == 2));
}

#[test]
fn missing_segments_are_ae() {
    let no_pid = msg(&[
        "MSH|^~\\&|EHR|CLINIC|||20260905||ADT^A08|M1|P|2.5",
        "EVN|A08",
    ]);
    let err = process(no_pid.as_bytes(), &options()).result.unwrap_err();
    assert_eq!(err, Hl7Error::MissingSegment { segment: "PID" });
    assert_eq!(err.ack_code(), AckCode::AE);
    let no_mrg = a40_merge().replace("MRG|654321^^^NORTHCLINIC^MR\r", "");
    let err = process(no_mrg.as_bytes(), &options()).result.unwrap_err();
    assert_eq!(err, Hl7Error::MissingSegment { segment: "MRG" });
    let no_sch_id = s12_new().replace("SCH|10345^SCHED|987^EPIC|", "SCH|||");
    let err = process(no_sch_id.as_bytes(), &options())
        .result
        .unwrap_err();
    assert!(matches!(
        err,
        Hl7Error::Field {
            segment: "SCH",
            field: 2,
            ..
        }
    ));
    let no_pid3 = a40_merge().replace("123456^^^NORTHCLINIC^MR", "");
    let inbound = process(no_pid3.as_bytes(), &options());
    let ack = inbound.ack("E1", "20260906090001");
    assert!(ack.as_str().ends_with(
        "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3: no patient identifier\r"
    ));
}

#[test]
fn ack_for_old_versions_uses_err1() {
    let text = a08_v23().replace("|19700704000000|", "|19701304|");
    let inbound = process(text.as_bytes(), &options());
    let ack = inbound.ack("OLD1", "20260905121501");
    assert_eq!(
        ack.as_str(),
        "MSH|^~\\&|ENROLL|PORTAL|CERNER|EASTCLINIC|20260905121501||ACK^A08|OLD1|P|2.3\r\
         MSA|AE|CTRL\\F\\7|PID-7: not a date\r\
         ERR|PID^1^7^102&Data type error&HL70357\r"
    );
}

/// Found by the `parse` fuzz target: a CR escaped in MSH-10 came back in
/// MSA-2 as `\.br\`, which reads as a line feed, so the sender could not
/// match the answer to its message.
#[test]
fn msa_2_echoes_an_escaped_line_break_in_msh_10_exactly() {
    let text = a08_v23().replace("|CTRL\\F\\7|", "|C\\X0D\\1\\X0A\\2|");
    let inbound = process(text.as_bytes(), &options());
    assert_eq!(inbound.header.as_ref().unwrap().control_id, "C\r1\n2");
    let ack = inbound.ack("OLD2", "20260905121501");
    let msa = ack.as_str().split('\r').nth(1).unwrap();
    assert!(msa.starts_with("MSA|AA|C\\X0D\\1\\X0A\\2"), "{msa}");
}

#[test]
fn ack_escapes_text_and_uses_inbound_delimiters() {
    let inbound = process(a28_dollar().as_bytes(), &options());
    let ack = inbound.ack("A|B", "20260905130001");
    assert_eq!(
        ack.as_str(),
        "MSH|$~\\&|ENROLL|PORTAL|ATHENA|SOUTHCLINIC|20260905130001||ACK$A28$ACK|A\\F\\B|P|2.4\rMSA|AA|A28-1\r"
    );
    // An internal error made by the caller after mapping: AE 207.
    let header = inbound.header.as_ref().unwrap();
    let internal = Hl7Error::Internal {
        reason: "storage unavailable; resend later".into(),
    };
    let ack = build_ack(Some(header), Some(&internal), "A2", "20260905130002");
    assert_eq!(ack.code(), AckCode::AE);
    assert!(
        ack.as_str()
            .ends_with("\rERR|$$$207&Application internal error&HL70357\r"),
        "{}",
        ack.as_str()
    );
    // Header::salvage reads MSH alone.
    let salvaged = Header::salvage(&a28_dollar()).unwrap();
    assert_eq!(&salvaged, header);
}

// ---------------------------------------------------------------------------
// MLLP
// ---------------------------------------------------------------------------

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0B];
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0x1C, 0x0D]);
    out
}

fn decode_all(codec: &mut MllpCodec, input: &[u8], chunk: usize) -> Vec<Result<Bytes, MllpError>> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        items.push(item);
    }
    items
}

/// xorshift, so the garbage is the same on every run.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn mllp_split_back_to_back_and_oversize() {
    let a = a04_registration();
    let b = a40_merge();
    let big = "Z".repeat(5000);
    let mut input = b"\r\n stray".to_vec();
    input.extend(frame(a.as_bytes()));
    input.extend(frame(big.as_bytes()));
    input.extend(frame(b.as_bytes()));
    for chunk in [1, 2, 3, 7, 64, 1000, input.len()] {
        let mut codec = MllpCodec::new(4096);
        let items = decode_all(&mut codec, &input, chunk);
        assert_eq!(items.len(), 3, "chunk {chunk}");
        assert_eq!(items[0].as_ref().unwrap(), a.as_bytes());
        match &items[1] {
            Err(MllpError::TooLarge {
                size,
                max_len,
                head,
            }) => {
                assert_eq!((*size, *max_len), (5000, 4096));
                assert_eq!(head.len(), 4096);
            }
            other => panic!("chunk {chunk}: {other:?}"),
        }
        assert_eq!(items[2].as_ref().unwrap(), b.as_bytes());
    }
}

#[test]
fn mllp_cut_frames_and_eof() {
    let mut input = b"\x0bMSH|cut off".to_vec();
    input.extend(frame(b"MSH|whole"));
    input.extend(b"\x0bMSH|at eof");
    let items = decode_all(&mut MllpCodec::default(), &input, 5);
    assert_eq!(items.len(), 3);
    assert!(
        matches!(&items[0], Err(MllpError::Incomplete { size: 11, head }) if head == "MSH|cut off")
    );
    assert_eq!(items[1].as_ref().unwrap(), &b"MSH|whole"[..]);
    assert!(matches!(
        &items[2],
        Err(MllpError::Incomplete { size: 10, .. })
    ));
    // An end byte without its CR still ends the frame.
    let items = decode_all(&mut MllpCodec::default(), b"\x0bA\x1c\x0bB\x1c\x0d", 1);
    assert_eq!(items, vec![Ok(Bytes::from("A")), Ok(Bytes::from("B"))]);
}

#[test]
fn mllp_three_megabytes_of_garbage() {
    let noise = garbage(3 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
    let valid = a04_registration();
    for max_len in [1024, 64 * 1024, 1024 * 1024] {
        let mut input = noise.clone();
        input.extend(frame(valid.as_bytes()));
        let mut codec = MllpCodec::new(max_len);
        let items = decode_all(&mut codec, &input, 8192);
        assert_eq!(
            items.last().unwrap().as_ref().unwrap(),
            valid.as_bytes(),
            "max {max_len}: the frame after the garbage still decodes"
        );
        // Every garbage frame goes through the parser and gets an ACK.
        for item in &items {
            let bytes = match item {
                Ok(b) => b.clone(),
                Err(MllpError::TooLarge { head, .. } | MllpError::Incomplete { head, .. }) => {
                    assert!(head.len() <= max_len);
                    head.clone()
                }
            };
            let inbound = process(&bytes, &options());
            let ack = inbound.ack("G", "20260101");
            assert!(Message::parse(ack.as_str()).is_ok());
        }
    }
    // Garbage with no start byte at all: nothing, and nothing kept.
    let ascii: Vec<u8> = noise.iter().map(|b| b'a' + b % 26).collect();
    let mut codec = MllpCodec::default();
    let mut buf = BytesMut::from(&ascii[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
    // One 3 MB frame over a 1 MB limit: reported once, never buffered whole.
    let mut input = frame(&ascii);
    input.extend(frame(valid.as_bytes()));
    let mut codec = MllpCodec::new(1024 * 1024);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut peak = 0;
    for piece in input.chunks(8192) {
        buf.extend_from_slice(piece);
        peak = peak.max(buf.len());
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    assert!(peak <= 1024 * 1024 + 8192, "peak buffer {peak}");
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[0], Err(MllpError::TooLarge { size, .. }) if *size == ascii.len()));
    assert_eq!(items[1].as_ref().unwrap(), valid.as_bytes());
}

#[test]
fn mllp_encoder() {
    let mut codec = MllpCodec::default();
    let mut dst = BytesMut::new();
    codec.encode("MSH|x", &mut dst).unwrap();
    assert_eq!(&dst[..], b"\x0bMSH|x\x1c\x0d");
    assert!(codec.encode(&b"bad\x1cbyte"[..], &mut dst).is_err());
}

#[tokio::test]
async fn mllp_over_a_stream_with_acks() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{FramedRead, FramedWrite};

    let (client, server) = tokio::io::duplex(1024);
    let (server_read, server_write) = tokio::io::split(server);
    let (client_read, mut client_write) = tokio::io::split(client);

    let messages = [a04_visit(), "Z".repeat(3000), s12_new()];
    let writer = tokio::spawn(async move {
        for m in &messages {
            // Write each frame in small pieces, with noise between frames.
            for piece in frame(m.as_bytes()).chunks(100) {
                client_write.write_all(piece).await.unwrap();
            }
            client_write.write_all(b"\r\n").await.unwrap();
        }
        client_write.shutdown().await.unwrap();
    });

    let listener = tokio::spawn(async move {
        let mut frames = FramedRead::new(server_read, MllpCodec::new(2048));
        let mut out = FramedWrite::new(server_write, MllpCodec::new(2048));
        let mut n = 0;
        while let Some(item) = frames.next().await {
            n += 1;
            let ack = match item.unwrap() {
                Ok(bytes) => process(&bytes, &options()).ack(&format!("ACK{n}"), "20260905120001"),
                Err(MllpError::TooLarge { head, .. } | MllpError::Incomplete { head, .. }) => {
                    let header = Header::salvage(&String::from_utf8_lossy(&head));
                    let err = Hl7Error::Internal {
                        reason: "message too large".into(),
                    };
                    build_ack(
                        header.as_ref(),
                        Some(&err),
                        &format!("ACK{n}"),
                        "20260905120001",
                    )
                }
            };
            out.send(ack.to_bytes()).await.unwrap();
        }
        n
    });

    let mut acks = FramedRead::new(client_read, MllpCodec::default());
    let mut codes = Vec::new();
    for _ in 0..3 {
        let bytes = acks.next().await.unwrap().unwrap().unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let ack = Message::parse(&text).unwrap();
        codes.push(ack.get("MSA-1").unwrap().into_owned());
    }
    writer.await.unwrap();
    assert_eq!(listener.await.unwrap(), 3);
    assert_eq!(codes, ["AA", "AE", "AA"]);
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let inbound = process(&bytes, &options());
        let ack = inbound.ack("P1", "20260101");
        prop_assert!(Message::parse(ack.as_str()).is_ok());
        let decoded = decode(&bytes);
        if let Ok(m) = Message::parse(&decoded.text) {
            for s in m.all_segments() {
                for f in s.fields() {
                    for r in f.repetitions() {
                        for c in r.components() {
                            for sc in c.subcomponents() {
                                let _ = sc.value();
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
        which in 0usize..9,
    ) {
        let samples = [
            a04_registration(), a04_visit(), a08_v23(), a28_dollar(), a31_bang(),
            a01_admit(), a40_merge(), s12_new(), s13_v28(),
        ];
        let mut bytes = samples[which].clone().into_bytes();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        let inbound = process(&bytes, &options());
        let ack = inbound.ack("P2", "20260101");
        let parsed = Message::parse(ack.as_str());
        prop_assert!(parsed.is_ok(), "{}", ack.as_str());
        let parsed = parsed.unwrap();
        if let Some(header) = &inbound.header {
            prop_assert_eq!(parsed.get("MSA-2").map(|s| s.into_owned()).unwrap_or_default(), header.control_id.clone());
        }
        let _ = Message::parse(&String::from_utf8_lossy(&bytes)).map(|m| m.get("PID-5-1"));
    }

    #[test]
    fn codec_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..300,
        max_len in 0usize..600,
    ) {
        let mut codec = MllpCodec::new(max_len);
        let items = decode_all(&mut codec, &bytes, chunk);
        for frame in items.into_iter().flatten() {
            prop_assert!(frame.len() <= max_len);
        }
    }

    #[test]
    fn codec_roundtrip(
        payloads in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no markers", |b| *b != 0x0B && *b != 0x1C), 0..300),
            0..8,
        ),
        chunk in 1usize..97,
    ) {
        let mut codec = MllpCodec::new(300);
        let mut wire = BytesMut::new();
        for p in &payloads {
            codec.encode(p.as_slice(), &mut wire).unwrap();
        }
        let items = decode_all(&mut codec, &wire, chunk);
        let got: Vec<Vec<u8>> = items.into_iter().map(|i| i.unwrap().to_vec()).collect();
        prop_assert_eq!(got, payloads);
    }
}

#[test]
fn a_malformed_msh_2_still_lets_the_ar_echo_msh_10() {
    for (name, msh2) in [
        ("a repeated delimiter", "^^\\&"),
        ("too short", "^~"),
        ("too long", "^~\\&#!"),
        ("a letter", "^~\\A"),
        ("empty", ""),
    ] {
        let message = a04_registration().replace("MSH|^~\\&|", &format!("MSH|{msh2}|"));
        let inbound = process(message.as_bytes(), &options());
        assert_eq!(
            inbound.result.as_ref().unwrap_err().ack_code(),
            AckCode::AR,
            "{name}"
        );
        let header = inbound.header.as_ref().expect("the header, salvaged");
        assert_eq!(header.control_id, "MSG00001", "{name}");
        assert_eq!(header.sending_application.namespace_id, "EPIC", "{name}");
        assert_eq!(
            header.sending_facility.namespace_id, "NORTHCLINIC",
            "{name}"
        );
        let ack = inbound.ack("R9", "20260905120001");
        assert!(
            ack.as_str().contains("\rMSA|AR|MSG00001|"),
            "{name}: {}",
            ack.as_str()
        );
        assert!(
            Message::parse(ack.as_str()).is_ok(),
            "{name}: the ACK parses"
        );
    }
    // Another field separator, read from MSH-1.
    let message = a04_registration()
        .replace('|', "#")
        .replace("MSH#^~\\&#", "MSH#^^\\&#");
    let inbound = process(message.as_bytes(), &options());
    assert_eq!(inbound.header.unwrap().control_id, "MSG00001");
    // No usable field separator: nothing to echo.
    let inbound = process(b"MSHA^~\\&AEPIC", &options());
    assert!(inbound.header.is_none());
}

#[test]
fn a_nul_in_a_mapped_field_is_ae_naming_the_field() {
    for nul in ["\0", "\\X00\\"] {
        let cases = [
            (
                "PID",
                5,
                a04_registration().replace("O'Brien^Mary", &format!("O'Br{nul}ien^Mary")),
            ),
            (
                "PID",
                3,
                a04_registration().replace("123456^^^", &format!("123{nul}456^^^")),
            ),
            (
                "PID",
                13,
                a04_registration().replace("mary.obrien@", &format!("mary{nul}.obrien@")),
            ),
            (
                "PID",
                11,
                a04_registration().replace("62701-1234", &format!("627{nul}01")),
            ),
            (
                "MRG",
                1,
                a40_merge().replace("MRG|654321", &format!("MRG|654{nul}321")),
            ),
        ];
        for (segment, number, message) in cases {
            let err = process(message.as_bytes(), &options()).result.unwrap_err();
            assert_eq!(
                err.ack_code(),
                AckCode::AE,
                "{segment}-{number} {nul:?}: {err:?}"
            );
            assert_eq!(
                err.error_code(),
                ErrorCode::DataTypeError,
                "{segment}-{number}"
            );
            let location = err.location().unwrap();
            assert_eq!(
                (location.segment.as_str(), location.field),
                (segment, Some(number)),
                "{nul:?}: {err}"
            );
            assert!(err.to_string().contains("NUL"), "{err}");
        }
    }
    // A NUL in a field Enroll does not read harms nothing: applied.
    let unused = a04_registration().replace("|CAT|ACC123", "|C\0AT|ACC123");
    assert!(process(unused.as_bytes(), &options()).result.is_ok());
    // A NUL in MSH-10 is not patient data: the message is taken and the
    // ACK echoes it as the escape of the same character.
    let message = a04_registration().replace("|MSG00001|", "|MSG\u{0}001|");
    let inbound = process(message.as_bytes(), &options());
    assert!(inbound.result.is_ok());
    let ack = inbound.ack("R10", "20260905120001");
    assert!(
        ack.as_str().contains("\rMSA|AA|MSG\\X00\\001\r"),
        "{}",
        ack.as_str()
    );
}

/// A PID segment with the given fields (the rest empty), after an A04's MSH.
fn a04_with_pid(fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|&(n, _)| n).max().unwrap_or(1);
    let mut pid = vec![String::new(); last + 1];
    pid[0] = "PID".into();
    pid[3] = "123456^^^NORTHCLINIC^MR".into();
    for &(n, value) in fields {
        pid[n] = value.into();
    }
    msg(&[MSH_A04, &pid.join("|")])
}

fn mapped(fields: &[(usize, &str)]) -> PatientChange {
    let text = a04_with_pid(fields);
    patient(&process(text.as_bytes(), &options()).result.unwrap()).clone()
}

/// Which repetition a field is taken from: the legal name (XPN-7 L) and
/// the home address (XAD-7 H) wherever they stand, else the first.
#[test]
fn the_legal_name_and_the_home_zip_are_picked_wherever_they_stand() {
    let p = mapped(&[
        (5, "Smith^Mary^^^^^M~O'Brien^Mary^^^^^L"),
        (
            11,
            "PO Box 9^^Springfield^IL^62799^USA^M~1 Main^^Springfield^IL^62701^USA^H",
        ),
    ]);
    assert_eq!(p.sent.last_name.as_deref(), Some("O'Brien"));
    assert_eq!(p.sent.zip.as_deref(), Some("62701"));
    // Without an L or an H: the first.
    let p = mapped(&[
        (5, "Smith^Mary^^^^^M~O'Brien^Mary"),
        (
            11,
            "PO Box 9^^Springfield^IL^62799~1 Main^^Springfield^IL^62701",
        ),
    ]);
    assert_eq!(p.sent.last_name.as_deref(), Some("Smith"));
    assert_eq!(p.sent.zip.as_deref(), Some("62799"));
    // An H without a ZIP gives way to a repetition with one.
    let p = mapped(&[(
        11,
        "1 Main^^Springfield^IL^^USA^H~PO Box 9^^Springfield^IL^62799",
    )]);
    assert_eq!(p.sent.zip.as_deref(), Some("62799"));
}

/// An email is an XTN with use code NET or equipment Internet or X.400
/// (any one is enough), a `mailto:` in front dropped.
#[test]
fn an_email_is_any_telecom_marked_as_one() {
    for (name, xtn, email) in [
        (
            "use code NET only",
            "^NET^^a@example.org",
            Some("a@example.org"),
        ),
        (
            "equipment Internet only",
            "^^Internet^b@example.org",
            Some("b@example.org"),
        ),
        (
            "equipment X.400 only",
            "^^X.400^c@example.org",
            Some("c@example.org"),
        ),
        (
            "mailto:",
            "^NET^Internet^MAILTO:d@example.org",
            Some("d@example.org"),
        ),
        (
            "an old sender's XTN-1",
            "e@example.org^NET",
            Some("e@example.org"),
        ),
        ("a phone", "^PRN^PH^^1^217^5551234", None),
    ] {
        let p = mapped(&[(13, xtn)]);
        assert_eq!(p.sent.email.as_deref(), email, "{name}");
    }
}

/// An HL7 null asks to delete a value; a field not sent deletes nothing.
#[test]
fn only_an_hl7_null_clears_birth_sex_and_the_telecoms() {
    let p = mapped(&[(5, "Doe^Jane")]);
    assert_eq!(p.cleared, [], "nothing sent, nothing cleared");
    // PID-8 null but the OBX gives the birth sex: nothing to clear.
    let text = a04_with_pid(&[(8, "\"\"")])
        + "OBX|1|CWE|76689-9^Sex assigned at birth^LN||F^Female^HL70001\r";
    let e = process(text.as_bytes(), &options()).result.unwrap();
    assert_eq!(patient(&e).sent.birth_sex.as_deref(), Some("F"));
    assert_eq!(patient(&e).cleared, []);
    let p = mapped(&[(8, "\"\"")]);
    assert_eq!(p.cleared, [DemographicField::BirthSex]);
    // PID-13 null clears the email and the cell phone unless PID-40 (v2.7)
    // carries telecoms; an empty or null PID-40 does not.
    for (name, pid_40) in [("empty", ""), ("null", "\"\""), ("absent", "-")] {
        let mut fields = vec![(13, "\"\"")];
        if pid_40 != "-" {
            fields.extend([(40, pid_40), (41, "x")]);
        }
        assert_eq!(
            mapped(&fields).cleared,
            [DemographicField::Email, DemographicField::CellPhone],
            "PID-40 {name}"
        );
    }
    let p = mapped(&[(13, "\"\""), (40, "^NET^Internet^f@example.org")]);
    assert_eq!(p.cleared, []);
    assert_eq!(p.sent.email.as_deref(), Some("f@example.org"));
}
