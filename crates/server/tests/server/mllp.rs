//! HL7 v2 over real TCP (MLLP) into the real store, on both engines: a
//! table of realistic messages with the ACK each must get and the patient
//! state after it; duplicates; merges and the cap; oversized frames;
//! reprocessing after a mapping fix; many connections at once; and, when
//! installed, the Python `hl7` package's `mllp_send` as a third-party client.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{ADMIN_TOKEN, TestApp, on_each_engine};

/// A message from segments, as EHRs send them (segments end with `\r`).
fn hl7(segments: &[&str]) -> Vec<u8> {
    let mut text = segments.join("\r");
    text.push('\r');
    text.into_bytes()
}

fn msh(event: &str, control_id: &str) -> String {
    format!("MSH|^~\\&|EPIC|TEST|ENROLL|PORTAL|20261125100000||{event}|{control_id}|P|2.5.1")
}

/// A registration with every required field and a cell phone.
pub(crate) fn a04(control_id: &str, mrn: &str, first: &str, email: &str) -> Vec<u8> {
    hl7(&[
        &msh("ADT^A04^ADT_A01", control_id),
        "EVN|A04|20261125100000",
        &format!(
            "PID|1||{mrn}^^^TEST^MR~999-99-9999^^^SSA^SS||Lopez^{first}^M^^^^L||19800214|F|||12 Elm St^Apt 3^New York^NY^10027^USA^H||^PRN^PH^^1^212^5550100~^NET^Internet^{email}~^PRN^CP^^1^917^5550199|||||||||||||||||"
        ),
        "PV1|1|O|CLINIC^101^1^TEST",
    ])
}

/// One MLLP connection, as a sender uses it: a frame out, its ACK back.
pub(crate) struct Sender {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Sender {
    pub(crate) async fn connect(addr: SocketAddr) -> Sender {
        Sender {
            stream: TcpStream::connect(addr).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, message: &[u8]) -> String {
        self.write_frame(message).await;
        self.read_ack().await.expect("an ACK")
    }

    /// Sends one frame without waiting for its answer.
    async fn write_frame(&mut self, message: &[u8]) {
        let mut frame = vec![0x0B];
        frame.extend_from_slice(message);
        frame.extend_from_slice(&[0x1C, 0x0D]);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends one frame and reads its answer; `None` when the server closed
    /// the connection instead.
    async fn read_ack_of(&mut self, message: &[u8]) -> Option<String> {
        self.write_frame(message).await;
        self.read_ack().await
    }

    /// Fails when any byte (or the close) arrives within `wait`.
    async fn assert_silent_for(&mut self, wait: Duration, why: &str) {
        let mut chunk = [0u8; 4096];
        if let Ok(read) = tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            let n = read.unwrap_or(0);
            panic!("{why}: got {:?}", String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// The next ACK, or `None` when the server closed the connection.
    async fn read_ack(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == [0x1C, 0x0D]) {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let start = frame.iter().position(|&b| b == 0x0B).unwrap_or(0);
                return Some(String::from_utf8_lossy(&frame[start + 1..end]).into_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .expect("the server answers within 30 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Field `n` (1-based after the segment name) of the first `segment`.
fn field<'a>(message: &'a str, segment: &str, n: usize) -> &'a str {
    message
        .split('\r')
        .find(|s| s.starts_with(segment))
        .and_then(|s| s.split('|').nth(n))
        .unwrap_or("")
}

fn ack_code(ack: &str) -> &str {
    field(ack, "MSA", 1)
}

async fn patient_by_mrn(app: &TestApp, mrn: &str) -> Option<Value> {
    // As the administrator: the patient may be any practice's.
    let (status, found) = app.admin_get(&format!("/api/patients?mrn={mrn}")).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    found.as_array().and_then(|list| list.first().cloned())
}

async fn invites_of(app: &TestApp, mrn: &str) -> Vec<Value> {
    let id = patient_by_mrn(app, mrn).await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.invites(id).await
}

/// What a case expects of the patient afterwards.
enum Then {
    /// The patient exists with these values (by API field name).
    Patient(&'static str, &'static [(&'static str, &'static str)]),
    /// No patient with this MRN.
    NoPatient(&'static str),
    /// The patient has this many invites.
    Invites(&'static str, usize),
}

struct Case {
    name: &'static str,
    message: Vec<u8>,
    ack: &'static str,
    /// Text the ERR segment or MSA-3 must contain.
    error_mentions: Option<&'static str>,
    then: Vec<Then>,
}

fn cases() -> Vec<Case> {
    let mut latin1 = msh("ADT^A28^ADT_A05", "C-LATIN1").into_bytes();
    latin1.extend_from_slice(b"||||||8859/1\rPID|1||2001^^^TEST^MR||Mu\xf1oz^Jos\xe9||19751103|M|||5 Pine St^^Newark^NJ^07102||^NET^Internet^jose@example.org\r");
    vec![
        Case {
            name: "A04 new patient with every field: chart added, invite queued",
            message: a04("C-1", "1001", "Maria", "maria@example.org"),
            ack: "AA",
            error_mentions: None,
            then: vec![
                Then::Patient(
                    "1001",
                    &[
                        ("first_name", "Maria"),
                        ("last_name", "Lopez"),
                        ("date_of_birth", "1980-02-14"),
                        ("birth_sex", "F"),
                        ("zip", "10027"),
                        ("email", "maria@example.org"),
                        ("cell_phone", "+19175550199"),
                    ],
                ),
                Then::Invites("1001", 1),
            ],
        },
        Case {
            name: "A08 changing only the cell phone: updated, no new invite",
            message: hl7(&[
                &msh("ADT^A08^ADT_A01", "C-2"),
                "PID|1||1001^^^TEST^MR||Lopez^Maria||19800214|F|||12 Elm St^^New York^NY^10027||^PRN^CP^^1^917^5550111",
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![
                Then::Patient(
                    "1001",
                    &[
                        ("cell_phone", "+19175550111"),
                        ("email", "maria@example.org"),
                    ],
                ),
                Then::Invites("1001", 1),
            ],
        },
        Case {
            name: "A28 in Latin-1 (MSH-18 8859/1): accents read right",
            message: latin1,
            ack: "AA",
            error_mentions: None,
            then: vec![Then::Patient(
                "2001",
                &[("first_name", "José"), ("last_name", "Muñoz")],
            )],
        },
        Case {
            name: "escapes and repetitions: \\T\\ and \\S\\ in names, email from the NET repetition",
            message: hl7(&[
                &msh("ADT^A04^ADT_A01", "C-3"),
                "PID|1||3001^^^TEST^MR||Smith\\T\\Jones^Ren\\XC3A9\\e||19700704|F|||9 Elm^^Boston^MA^02118||(617)555-0100^PRN^PH~^NET^Internet^renee@example.org~^ORN^CP^^1^617^5550199",
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![Then::Patient(
                "3001",
                &[
                    ("last_name", "Smith&Jones"),
                    ("first_name", "Renée"),
                    ("email", "renee@example.org"),
                ],
            )],
        },
        Case {
            name: "missing email: the chart is added, no invite (staff see what is missing)",
            message: hl7(&[
                &msh("ADT^A04^ADT_A01", "C-4"),
                "PID|1||4001^^^TEST^MR||Khan^Imran||19920101|M|||1 Main St^^Austin^TX^78701",
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![
                Then::Patient("4001", &[("last_name", "Khan")]),
                Then::Invites("4001", 0),
            ],
        },
        Case {
            name: "PID-7 not a date: AE naming PID-7, nothing applied",
            message: hl7(&[
                &msh("ADT^A04^ADT_A01", "C-5"),
                "PID|1||5001^^^TEST^MR||Bad^Date||19801345|F|||1 Main St^^Austin^TX^78701||^NET^Internet^bad@example.org",
            ]),
            ack: "AE",
            error_mentions: Some("PID^1^7"),
            then: vec![Then::NoPatient("5001")],
        },
        Case {
            name: "unsupported message type ORU^R01: AR",
            message: hl7(&[
                &msh("ORU^R01^ORU_R01", "C-6"),
                "PID|1||6001^^^TEST^MR||Lab^Result||19800101|F",
                "OBR|1",
            ]),
            ack: "AR",
            error_mentions: Some("ORU"),
            then: vec![Then::NoPatient("6001")],
        },
        Case {
            name: "not HL7 at all: AR",
            message: b"hello, is this the portal?".to_vec(),
            ack: "AR",
            error_mentions: None,
            then: vec![],
        },
        Case {
            name: "A04 with a visit number for a known patient: an encounter (coalesced with the pending invite)",
            message: hl7(&[
                &msh("ADT^A04^ADT_A01", "C-7"),
                "PID|1||1001^^^TEST^MR||Lopez^Maria||19800214|F",
                "PV1|1|O|CLINIC^101^1^TEST||||||||||||||||V7001^^^TEST^VN",
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![Then::Invites("1001", 1)],
        },
        Case {
            name: "SIU^S12 new appointment, then S14: recorded",
            message: hl7(&[
                &msh("SIU^S12^SIU_S12", "C-8"),
                "SCH|A-77^SCHED|A-77^EPIC|||||CHECKUP|NORMAL|30|MIN|^^30^20261201140000^20261201143000",
                "PID|1||4001^^^TEST^MR||Khan^Imran||19920101|M",
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![Then::Invites("4001", 0)],
        },
        Case {
            name: "A08 marking the patient deceased (PID-30 Y): no invite ever",
            message: hl7(&[
                &msh("ADT^A08^ADT_A01", "C-9"),
                &format!(
                    "PID|1||3001^^^TEST^MR||Smith\\T\\Jones^Renée||19700704|F|||9 Elm^^Boston^MA^02118||^NET^Internet^renee@example.org{}20261120|Y",
                    "|".repeat(16)
                ),
            ]),
            ack: "AA",
            error_mentions: None,
            then: vec![Then::Patient("3001", &[("deceased", "true")])],
        },
    ]
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn a_table_of_messages_gets_the_right_acks_and_leaves_the_right_patients() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        for case in cases() {
            let ack = sender.send(&case.message).await;
            assert_eq!(
                ack_code(&ack),
                case.ack,
                "{:?} {}: {ack}",
                app.engine,
                case.name
            );
            if let Some(control_id) = std::str::from_utf8(&case.message)
                .ok()
                .map(|m| field(m, "MSH", 9))
                .filter(|c| !c.is_empty())
            {
                assert_eq!(
                    field(&ack, "MSA", 2),
                    control_id,
                    "{}: MSA-2 echoes MSH-10",
                    case.name
                );
                assert_eq!(
                    field(&ack, "MSH", 2),
                    "ENROLL",
                    "{}: sender and receiver swapped",
                    case.name
                );
                assert_eq!(field(&ack, "MSH", 4), "EPIC", "{}", case.name);
            }
            if let Some(mention) = case.error_mentions {
                assert!(ack.contains(mention), "{}: {ack}", case.name);
                assert!(
                    ack.contains("\rERR|"),
                    "{}: an ERR segment: {ack}",
                    case.name
                );
            }
            for then in &case.then {
                match then {
                    Then::Patient(mrn, fields) => {
                        let patient = patient_by_mrn(app, mrn)
                            .await
                            .unwrap_or_else(|| panic!("{}: patient {mrn}", case.name));
                        for (key, want) in *fields {
                            let value = patient.get(*key).unwrap_or(&patient["demographics"][*key]);
                            assert_eq!(&text_of(value), want, "{}: {key}", case.name);
                        }
                    }
                    Then::NoPatient(mrn) => {
                        assert!(patient_by_mrn(app, mrn).await.is_none(), "{}", case.name)
                    }
                    Then::Invites(mrn, n) => {
                        assert_eq!(invites_of(app, mrn).await.len(), *n, "{}", case.name)
                    }
                }
            }
        }
        // Every message was kept, with its status.
        let (_, list) = app.admin_get("/api/hl7/messages?limit=100").await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), cases().len());
        let (_, errors) = app.admin_get("/api/hl7/messages?status=error").await;
        assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
        assert_eq!(errors[0]["error_location"], "PID-7");
        let (_, rejected) = app.admin_get("/api/hl7/messages?status=rejected").await;
        assert_eq!(rejected.as_array().unwrap().len(), 2, "{rejected}");
        // The encounter and the appointment are on the timelines.
        let maria = patient_by_mrn(app, "1001").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        assert!(
            app.timeline_kinds(maria)
                .await
                .contains(&"encounter".to_string())
        );
        let imran = patient_by_mrn(app, "4001").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        assert!(
            app.timeline_kinds(imran)
                .await
                .contains(&"appointment_booked".to_string())
        );
        // The deceased patient's pending invite was cancelled.
        let renee = invites_of(app, "3001").await;
        assert!(renee.iter().all(|i| i["state"] == "cancelled"), "{renee:?}");
    })
    .await;
}

#[tokio::test]
async fn the_same_control_id_twice_gets_the_original_ack_and_is_applied_once() {
    on_each_engine(async |app: &TestApp| {
        let message = a04("DUP-1", "7001", "Ana", "ana@example.org");
        let mut sender = Sender::connect(app.mllp_addr).await;
        let first = sender.send(&message).await;
        // A second connection, as after a sender's reconnect.
        let mut again = Sender::connect(app.mllp_addr).await;
        let second = again.send(&message).await;
        assert_eq!(ack_code(&first), "AA");
        assert_eq!(first, second, "the original ACK, byte for byte");
        let id = patient_by_mrn(app, "7001").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let kinds = app.timeline_kinds(id).await;
        assert_eq!(
            kinds.iter().filter(|k| *k == "chart_added").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(app.invites(id).await.len(), 1);
        let (_, dups) = app.admin_get("/api/hl7/messages?status=duplicate").await;
        assert_eq!(dups.as_array().unwrap().len(), 1, "{dups}");
        assert!(dups[0]["duplicate_of"].is_i64());
        // The same control id from another sender is another message.
        let other = String::from_utf8(message)
            .unwrap()
            .replace("|EPIC|TEST|", "|CERNER|TEST|")
            .replace("7001^^^", "7002^^^");
        let ack = sender.send(other.as_bytes()).await;
        assert_eq!(ack_code(&ack), "AA");
        assert!(patient_by_mrn(app, "7002").await.is_some());

        // The same sender and control id with other content is still the
        // duplicate: answered with the first ACK and not applied.
        let changed = String::from_utf8(a04("DUP-1", "7001", "Ana", "ana@example.org"))
            .unwrap()
            .replace("^NY^10027^", "^NY^10099^");
        let third = sender.send(changed.as_bytes()).await;
        assert_eq!(third, first, "the original ACK");
        let (_, view) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(
            view["patient"]["demographics"]["zip"], "10027",
            "not applied"
        );
        let (_, dups) = app.admin_get("/api/hl7/messages?status=duplicate").await;
        assert_eq!(dups.as_array().unwrap().len(), 2, "{dups}");

        // Senders that differ only in MSH-4 are two senders.
        let schedule = json!({ "time_zone": "America/New_York", "windows": [] });
        let (status, body) = app
            .admin_post(
                "/api/practices",
                json!({ "code": "NORTH", "name": "North", "schedule": schedule }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let north = String::from_utf8(a04("DUP-1", "7003", "Ana", "ana@example.org"))
            .unwrap()
            .replace("|EPIC|TEST|", "|EPIC|NORTH|");
        let ack = sender.send(north.as_bytes()).await;
        assert_eq!(ack_code(&ack), "AA", "{ack}");
        assert_ne!(ack, first);
        let patient = patient_by_mrn(app, "7003")
            .await
            .expect("applied for NORTH");
        assert_eq!(patient["practice_id"], body["id"], "{patient}");
    })
    .await;
}

#[tokio::test]
async fn an_unmapped_facility_is_an_error_until_mapped_then_reprocessing_applies_it() {
    on_each_engine(async |app: &TestApp| {
        let message = String::from_utf8(a04("FAC-1", "8001", "Lea", "lea@example.org"))
            .unwrap()
            .replace("|EPIC|TEST|", "|EPIC|NORTHSIDE|");
        let mut sender = Sender::connect(app.mllp_addr).await;
        let ack = sender.send(message.as_bytes()).await;
        assert_eq!(ack_code(&ack), "AE", "{ack}");
        assert!(ack.contains("MSH^1^4"), "ERR names MSH-4: {ack}");
        assert!(patient_by_mrn(app, "8001").await.is_none());
        let (_, errors) = app
            .admin_get("/api/hl7/messages?status=error&facility=NORTHSIDE")
            .await;
        let id = errors[0]["id"].as_i64().unwrap();
        assert!(
            text_of(&errors[0]["error"]).contains("hl7/facility/NORTHSIDE"),
            "{errors}"
        );

        // Only an administrator maps facilities.
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                "/api/hl7/facilities/NORTHSIDE",
                Some(json!({"practice_code": "TEST"})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let mapped = app
            .http
            .put(app.url("/api/hl7/facilities/NORTHSIDE"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"practice_code": "TEST"}))
            .send()
            .await
            .unwrap();
        assert_eq!(mapped.status(), StatusCode::OK);

        let (status, reprocessed) = app
            .admin_post(&format!("/api/hl7/messages/{id}/reprocess"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{reprocessed}");
        assert_eq!(reprocessed["status"], "applied");
        assert_eq!(reprocessed["reprocessed_by"], "ada");
        assert!(patient_by_mrn(app, "8001").await.is_some());
        // Applied messages are not applied twice.
        let (status, again) = app
            .admin_post(&format!("/api/hl7/messages/{id}/reprocess"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        // Later messages from that facility go straight in.
        let next = message
            .replace("FAC-1", "FAC-2")
            .replace("8001^^^", "8002^^^");
        assert_eq!(ack_code(&sender.send(next.as_bytes()).await), "AA");
        // The raw message can be read back exactly, and reading it is audited.
        let (_, shown) = app.admin_get(&format!("/api/hl7/messages/{id}")).await;
        assert!(text_of(&shown["raw_text"]).starts_with("MSH|^~\\&|EPIC|NORTHSIDE|"));
        let (_, audit) = app.admin_get("/api/audit").await;
        assert!(audit.to_string().contains("hl7.message_view"), "{audit}");
    })
    .await;
}

/// Two charts of one person, each with an auto invite (chart added) and two
/// Enroll Nows, nothing delivered yet: 3 + 3 counted sends, each chart
/// within its own cap. Returns (survivor, merged) ids before the A40.
async fn two_charts_with_three_queued_sends_each(app: &TestApp, sender: &mut Sender) -> (i64, i64) {
    for (control, mrn) in [("M-1", "9001"), ("M-2", "9002")] {
        let ack = sender
            .send(&a04(control, mrn, "Eva", "eva@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA");
    }
    let survivor = patient_by_mrn(app, "9001").await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let merged = patient_by_mrn(app, "9002").await.unwrap()["id"]
        .as_i64()
        .unwrap();
    for id in [survivor, merged] {
        for _ in 0..2 {
            let (status, body) = app.enroll(id).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    (survivor, merged)
}

async fn merge_9002_into_9001(sender: &mut Sender, control_id: &str) {
    let ack = sender
        .send(&hl7(&[
            &msh("ADT^A40^ADT_A39", control_id),
            "EVN|A40|20261125100000",
            "PID|1||9001^^^TEST^MR||Lopez^Eva||19800214|F|||12 Elm St^^New York^NY^10027||^NET^Internet^eva@example.org",
            "MRG|9002^^^TEST^MR",
        ]))
        .await;
    assert_eq!(ack_code(&ack), "AA", "{ack}");
}

/// The invites' states, sorted, in one line: `cancelled queued sent`.
fn states_of(invites: &[Value]) -> String {
    let mut states: Vec<&str> = invites.iter().filter_map(|i| i["state"].as_str()).collect();
    states.sort_unstable();
    states.join(" ")
}

/// Runs a dispatcher in the background until the outbox has nothing due,
/// and returns the emails the SMTP server received.
async fn deliver_everything(app: &TestApp) -> Vec<enroll_notify::testing::ReceivedMail> {
    let smtp = crate::TestSmtp::start().await;
    let running = app
        .dispatcher(smtp.addr, "after-merge")
        .spawn(Duration::from_millis(20));
    // Settled when nothing is left queued and the count stopped moving.
    let mut last = usize::MAX;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = app
            .db
            .store
            .invites_in_state(enroll_store::InviteState::Queued, 1)
            .await
            .unwrap();
        let received = smtp.received().len();
        if received == last && queued.is_empty() {
            break;
        }
        last = received;
    }
    running.stop().await;
    smtp.received()
}

#[tokio::test]
async fn a_merge_moves_the_invite_history_so_the_cap_counts_both_charts() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        let (survivor, _merged) = two_charts_with_three_queued_sends_each(app, &mut sender).await;
        merge_9002_into_9001(&mut sender, "M-3").await;
        // The merged chart is gone from search; its MRN finds the survivor's messages.
        assert!(patient_by_mrn(app, "9002").await.is_none());
        let invites = app.invites(survivor).await;
        // 6 invites: the merged chart's auto invite coalesced with the
        // survivor's (R6), and of the 5 counted sends the one counted last
        // waits for the cap (R7): 4 in 30 days, both charts together.
        assert_eq!(
            states_of(&invites),
            "cancelled queued queued queued queued suppressed",
            "{:?}: {invites:?}",
            app.engine
        );
        let suppressed = invites.iter().find(|i| i["state"] == "suppressed").unwrap();
        assert!(suppressed["next_possible_at"].is_string(), "{suppressed}");
        let (status, body) = app.enroll(survivor).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let kinds = app.timeline_kinds(survivor).await;
        assert!(kinds.contains(&"chart_merged".to_string()), "{kinds:?}");
        assert!(
            kinds.contains(&"merged_into".to_string()),
            "the merged chart's timeline shows: {kinds:?}"
        );
        assert!(
            kinds.contains(&"invite_suppressed".to_string()),
            "{kinds:?}"
        );
        // A running dispatcher sends the 4 and no 5th.
        let mails = deliver_everything(app).await;
        assert_eq!(mails.len(), 4, "{:?}: R7 across the merge", app.engine);
        assert!(mails.iter().all(|m| m.to == ["eva@example.org"]));
        // A later message with the old MRN updates the survivor.
        let ack = sender
            .send(&hl7(&[
                &msh("ADT^A08^ADT_A01", "M-4"),
                "PID|1||9002^^^TEST^MR||Lopez^Eva||19800214|F|||12 Elm St^^New York^NY^10099",
            ]))
            .await;
        assert_eq!(ack_code(&ack), "AA");
        let (_, patient) = app.get(&format!("/api/patients/{survivor}")).await;
        assert_eq!(
            patient["patient"]["demographics"]["zip"], "10099",
            "{patient}"
        );
    })
    .await;
}

/// A chart merged away has no invites of its own any more: Enroll Now
/// there would start a fresh count of 4 beside the survivor's. The API
/// answers 409 naming the survivor, the staff page says where the chart
/// went (with a link) and Enroll Now there sends nothing.
#[tokio::test]
async fn enroll_now_on_a_chart_merged_away_answers_409_naming_the_survivor_and_sends_nothing() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        let (survivor, merged) = two_charts_with_three_queued_sends_each(app, &mut sender).await;
        merge_9002_into_9001(&mut sender, "M-3").await;
        for _ in 0..4 {
            let (status, body) = app.enroll(merged).await;
            assert_eq!(status, StatusCode::CONFLICT, "{:?}: {body}", app.engine);
            assert_eq!(body["code"], "merged_into", "{body}");
            assert_eq!(body["surviving_patient_id"], survivor, "{body}");
            let words = body["message"].as_str().unwrap();
            assert!(words.contains(&format!("patient {survivor}")), "{words}");
        }
        assert!(app.invites(merged).await.is_empty(), "{:?}", app.engine);

        let staff = crate::ui::Staff::sign_in(app, "frida").await;
        let (status, page) = staff.get(&format!("/patients/{merged}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("This chart was merged into"), "{page}");
        assert!(
            page.contains(&format!("href=\"/patients/{survivor}\"")),
            "{page}"
        );
        let csrf = staff.csrf().await;
        let (_, answer) = staff.enroll_in_place(merged, &csrf).await;
        assert_eq!(answer["result"], "refused", "{answer}");
        let words = answer["message"].as_str().unwrap();
        assert!(words.contains("MRN 9001"), "{words}");

        // Only the survivor's 4 in 30 days go out.
        let mails = deliver_everything(app).await;
        assert_eq!(mails.len(), 4, "{:?}: R7 across the merge", app.engine);
        assert!(app.invites(merged).await.is_empty(), "{:?}", app.engine);
    })
    .await;
}

/// Triggers addressed to a chart merged away, by the JSON API (its id) or
/// by HL7 (its MRN), are the survivor's: they coalesce with its waiting
/// auto invite (R6) and the merged chart gets no invite of its own.
#[tokio::test]
async fn triggers_for_a_chart_merged_away_act_on_the_survivor() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        for (control, mrn) in [("T-1", "9001"), ("T-2", "9002")] {
            let ack = sender
                .send(&a04(control, mrn, "Eva", "eva@example.org"))
                .await;
            assert_eq!(ack_code(&ack), "AA");
        }
        let survivor = patient_by_mrn(app, "9001").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let merged = patient_by_mrn(app, "9002").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        merge_9002_into_9001(&mut sender, "T-3").await;
        let merged_lines = app.timeline_kinds(merged).await.len();

        let (status, outcome) = app
            .post(&format!("/api/patients/{merged}/encounters"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{outcome}");
        assert_eq!(outcome["patient_id"], survivor, "{:?}: {outcome}", app.engine);
        assert_eq!(outcome["decision"]["decision"], "coalesced", "{outcome}");
        let ack = sender
            .send(&hl7(&[
                &msh("ADT^A04^ADT_A01", "T-4"),
                "EVN|A04|20261125100000",
                "PID|1||9002^^^TEST^MR||Lopez^Eva||19800214|F|||12 Elm St^^New York^NY^10027||^NET^Internet^eva@example.org",
                "PV1|1|O|CLINIC^101^1^TEST||||||||||||||||V9002^^^TEST^VN",
            ]))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{ack}");

        assert!(app.invites(merged).await.is_empty(), "{:?}", app.engine);
        let kinds = app.timeline_kinds(survivor).await;
        let encounters = kinds.iter().filter(|k| *k == "encounter").count();
        assert_eq!(encounters, 1, "{:?}: the HL7 visit, {kinds:?}", app.engine);
        assert_eq!(
            app.timeline_kinds(merged).await.len(),
            merged_lines,
            "{:?}: nothing more on the merged chart",
            app.engine
        );
        let mails = deliver_everything(app).await;
        assert_eq!(mails.len(), 1, "{:?}: one waiting auto invite", app.engine);
    })
    .await;
}

/// The merge cannot stop an invite a dispatcher has claimed (it may be in
/// flight); the dispatcher's own check of R7 before sending must.
#[tokio::test]
async fn the_dispatcher_checks_the_cap_again_for_invites_claimed_before_a_merge() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        let (survivor, _) = two_charts_with_three_queued_sends_each(app, &mut sender).await;
        let lease = jiff::SignedDuration::from_mins(5);
        let now = enroll_server::Clock::now(app.clock.as_ref());
        let claimed = app
            .db
            .store
            .claim_due_invites("crashed-worker", now, lease, 100)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 6, "{:?}", app.engine);
        merge_9002_into_9001(&mut sender, "M-3").await;
        let invites = app.invites(survivor).await;
        assert_eq!(
            states_of(&invites),
            "cancelled queued queued queued queued queued",
            "claimed invites are left to the dispatcher: {invites:?}"
        );
        // The claims run out; a dispatcher takes the invites over.
        app.clock
            .advance(lease + jiff::SignedDuration::from_secs(1));
        let mails = deliver_everything(app).await;
        assert_eq!(mails.len(), 4, "{:?}: no 5th send in 30 days", app.engine);
        let invites = app.invites(survivor).await;
        assert_eq!(
            states_of(&invites),
            "cancelled sent sent sent sent suppressed",
            "{invites:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_frame_is_answered_ar_and_the_connection_goes_on() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        // 3 MB of garbage behind a readable MSH.
        let mut big = msh("ADT^A04^ADT_A01", "BIG-1").into_bytes();
        big.push(b'\r');
        big.extend(std::iter::repeat_n(b'Z', 3 * 1024 * 1024));
        let ack = sender.send(&big).await;
        assert_eq!(ack_code(&ack), "AR", "{ack}");
        assert_eq!(field(&ack, "MSA", 2), "BIG-1");
        assert!(ack.contains("more than the maximum"), "{ack}");
        let (_, rejected) = app.admin_get("/api/hl7/messages?status=rejected").await;
        assert_eq!(rejected.as_array().unwrap().len(), 1);
        // The next message on the same connection is taken as usual.
        let ack = sender
            .send(&a04("BIG-2", "9101", "Ivy", "ivy@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA");
    })
    .await;
}

#[tokio::test]
async fn many_connections_at_once_each_keep_their_order() {
    on_each_engine(async |app: &TestApp| {
        let mut tasks = tokio::task::JoinSet::new();
        for connection in 0..4 {
            let addr = app.mllp_addr;
            tasks.spawn(async move {
                let mut sender = Sender::connect(addr).await;
                for n in 0..25 {
                    let mrn = format!("{connection}{n:03}");
                    // Create, then update the same patient: order matters.
                    let ack = sender
                        .send(&a04(
                            &format!("K{connection}-{n}-a"),
                            &mrn,
                            "Old",
                            "x@example.org",
                        ))
                        .await;
                    assert_eq!(ack_code(&ack), "AA", "{ack}");
                    let update = hl7(&[
                        &msh("ADT^A08^ADT_A01", &format!("K{connection}-{n}-b")),
                        &format!("PID|1||{mrn}^^^TEST^MR||Lopez^New"),
                    ]);
                    assert_eq!(ack_code(&sender.send(&update).await), "AA");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        for connection in 0..4 {
            let patient = patient_by_mrn(app, &format!("{connection}024"))
                .await
                .unwrap();
            assert_eq!(patient["demographics"]["first_name"], "New");
        }
        let (_, applied) = app
            .admin_get("/api/hl7/messages?status=applied&limit=1000")
            .await;
        assert_eq!(applied.as_array().unwrap().len(), 200);
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_stopping_finishes_the_message_in_hand() {
    for engine in enroll_store::testing::ENGINES {
        let short_idle = |settings: &mut enroll_server::Settings| {
            settings.mllp.idle_timeout = Duration::from_millis(300);
        };
        let Some(mut app) = TestApp::start_with(engine, short_idle).await else {
            continue;
        };
        let addr = app.mllp_addr;
        let mut idle = Sender::connect(addr).await;
        assert_eq!(idle.read_ack().await, None, "closed after the idle timeout");

        // A message in hand when the stop comes is still stored and
        // answered: its commit is held until the listener has stopped
        // accepting, so the stop surely overlaps it.
        let mut sender = Sender::connect(addr).await;
        app.faults.hold();
        sender
            .write_frame(&a04("STOP-1", "9201", "Uma", "uma@example.org"))
            .await;
        within_10s(app.faults.held(1)).await;
        let faults = app.faults.clone();
        let release_once_stopping = async move {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            faults.release();
        };
        let (ack, (), ()) =
            tokio::join!(sender.read_ack(), app.stop_servers(), release_once_stopping);
        let ack = ack.expect("the ACK of the message in hand");
        assert_eq!(ack_code(&ack), "AA", "{engine:?}");
        assert_eq!(
            sender.read_ack().await,
            None,
            "then the connection is closed"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "and nothing more is accepted"
        );
        let stored = app
            .db
            .store
            .hl7_messages(&Default::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].status, enroll_store::MessageStatus::Applied);
        app.stop().await;
    }
}

/// `mllp_send` from the Python `hl7` package, when installed (scripts/test
/// installs it and sets ENROLL_REQUIRE_MLLP_SEND=1 so CI cannot skip it).
fn mllp_send_available() -> bool {
    let found = std::process::Command::new("mllp_send")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("ENROLL_REQUIRE_MLLP_SEND").as_deref() != Ok("1"),
            "mllp_send (pip install hl7) is required but not found"
        );
        eprintln!("mllp_send is not installed (pip install hl7): skipping");
    }
    found
}

#[tokio::test]
async fn a_third_party_client_python_hl7_mllp_send_gets_an_ack_for_every_message() {
    if !mllp_send_available() {
        return;
    }
    on_each_engine(async |app: &TestApp| {
        // A file as an interface analyst would write one: segments on lines.
        let mut file = String::new();
        let mut expected = Vec::new();
        for n in 0..20 {
            let message = a04(
                &format!("PY-{n}"),
                &format!("55{n:02}"),
                "Kim",
                "kim@example.org",
            );
            file.push_str(&String::from_utf8(message).unwrap().replace('\r', "\n"));
            expected.push((format!("PY-{n}"), "AA"));
        }
        file.push_str(&msh("ADT^A04^ADT_A01", "PY-BAD"));
        file.push_str("\nPID|1||5599^^^TEST^MR||Kim^Lee||20261399|F\n");
        expected.push(("PY-BAD".to_string(), "AE"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.hl7");
        std::fs::write(&path, file).unwrap();

        let addr = app.mllp_addr;
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("mllp_send")
                .arg("--loose")
                .arg("--file")
                .arg(&path)
                .arg("--port")
                .arg(addr.port().to_string())
                .arg(addr.ip().to_string())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for (control_id, code) in &expected {
            let msa = format!("MSA|{code}|{control_id}");
            assert!(
                stdout.contains(&msa),
                "{:?}: no {msa} in:\n{stdout}",
                app.engine
            );
        }
        assert_eq!(stdout.matches("MSA|").count(), expected.len(), "{stdout}");
        let (_, applied) = app
            .admin_get("/api/hl7/messages?status=applied&limit=1000")
            .await;
        assert_eq!(applied.as_array().unwrap().len(), 20);
    })
    .await;
}

#[tokio::test]
async fn the_tls_port_takes_messages_inside_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = crate::pki::or_skip(crate::pki::self_signed(dir.path())) else {
        return;
    };
    for engine in enroll_store::testing::ENGINES {
        let with_tls = |settings: &mut enroll_server::Settings| {
            settings.mllp.tls_listen = Some("127.0.0.1:0".parse().unwrap());
            settings.mllp.tls_cert = Some(cert.clone());
            settings.mllp.tls_key = Some(key.clone());
        };
        let Some(app) = TestApp::start_with(engine, with_tls).await else {
            continue;
        };
        let tls_addr = app.mllp_tls_addr.expect("a TLS port");

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&cert).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        let server_name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(server_name, tcp).await.unwrap();
        let mut frame = vec![0x0B];
        frame.extend(a04("TLS-1", "9301", "Noor", "noor@example.org"));
        frame.extend([0x1C, 0x0D]);
        tls.write_all(&frame).await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(&[0x1C, 0x0D]) {
            let mut chunk = [0u8; 1024];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed before answering");
            answer.extend_from_slice(&chunk[..n]);
        }
        let ack = String::from_utf8_lossy(&answer);
        assert_eq!(ack_code(&ack), "AA", "{engine:?}: {ack}");
        assert_eq!(field(&ack, "MSA", 2), "TLS-1");

        // Plain MLLP sent to the TLS port is not read as a message.
        let mut plain = Sender::connect(tls_addr).await;
        plain.stream.write_all(&frame).await.unwrap();
        assert_eq!(plain.read_ack().await, None);
        let stored = app
            .db
            .store
            .hl7_messages(&Default::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "{engine:?}");

        // Each listener's messages are its own on the Connections page.
        let plain_ack = Sender::connect(app.mllp_addr)
            .await
            .send(&a04("PLAIN-1", "9302", "Omar", "omar@example.org"))
            .await;
        assert_eq!(ack_code(&plain_ack), "AA", "{engine:?}: {plain_ack}");
        let ada = crate::ui::Staff::sign_in(&app, "ada").await;
        let path = format!("/admin/practices/{}/connections", app.practice_id);
        let (status, page) = ada.get(&path).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        for (name, addr, how) in [
            ("mllp", app.mllp_addr, "without TLS"),
            ("mllp-tls", tls_addr, "TLS"),
        ] {
            let heading = format!("<h3 id=\"listener-{name}-h\">Listening on {addr}, {how}</h3>");
            assert!(page.contains(&heading), "{engine:?}: {heading} in {page}");
            let table = &page[page.find(&format!("id=\"counts-{name}\"")).unwrap()..];
            let table = &table[..table.find("</table>").unwrap()];
            assert!(
                table.contains("AA: accepted</th><td>1</td><td>1</td>"),
                "{engine:?}: {name} counts its one message: {table}"
            );
        }
        app.stop().await;
    }
}

/// The message as sent by `facility` (MSH-4) instead of TEST.
fn from_facility(message: &[u8], facility: &str) -> Vec<u8> {
    String::from_utf8_lossy(message)
        .replacen("|EPIC|TEST|", &format!("|EPIC|{facility}|"), 1)
        .into_bytes()
}

/// An AR whose ERR-8 says `why`.
fn assert_refused(ack: &str, why: &str) {
    assert_eq!(ack_code(ack), "AR", "{ack}");
    assert!(field(ack, "ERR", 8).contains(why), "{why} in {ack}");
}

/// MSH-10 of every stored message, sorted.
async fn stored_control_ids(app: &TestApp) -> Vec<String> {
    let stored = app
        .db
        .store
        .hl7_messages(&Default::default())
        .await
        .unwrap();
    let mut ids: Vec<String> = stored.into_iter().map(|m| m.control_id).collect();
    ids.sort_unstable();
    ids
}

fn sender_rule(facility: &str, allow: &[&str], names: &[&str]) -> enroll_server::SenderRule {
    enroll_server::SenderRule {
        facility: facility.into(),
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        certificate_names: names.iter().map(|n| n.to_string()).collect(),
    }
}

#[tokio::test]
async fn senders_speak_only_for_their_facilities_from_their_addresses() {
    let Some(app) = TestApp::start_with(enroll_store::testing::Engine::Sqlite, |settings| {
        settings.mllp.senders = vec![
            sender_rule("TEST", &["127.0.0.0/8"], &[]),
            sender_rule("REMOTE", &["10.0.0.0/8"], &[]),
        ];
        settings.mllp.rejected_frames_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let mut sender = Sender::connect(app.mllp_addr).await;
    let taken = sender
        .send(&a04("OK-1", "9401", "Pia", "pia@example.org"))
        .await;
    assert_eq!(ack_code(&taken), "AA", "{taken}");

    let unknown = sender
        .send(&from_facility(
            &a04("NO-1", "9402", "Quinn", "quinn@example.org"),
            "OTHER",
        ))
        .await;
    assert_refused(&unknown, "\"OTHER\" (MSH-4) is not one this Enroll takes");
    assert_eq!(field(&unknown, "MSA", 2), "NO-1", "the sender can match it");
    assert_eq!(field(&unknown, "ERR", 2), "MSH^1^4", "{unknown}");
    // The ACK is addressed back to the facility that sent it.
    assert_eq!(field(&unknown, "MSH", 5), "OTHER", "{unknown}");

    let elsewhere = sender
        .send(&from_facility(
            &a04("NO-2", "9403", "Rui", "rui@example.org"),
            "REMOTE",
        ))
        .await;
    assert_refused(&elsewhere, "may not send from the address 127.0.0.1");

    // Refused messages are neither stored nor applied.
    assert_eq!(stored_control_ids(&app).await, ["OK-1"]);
    assert!(patient_by_mrn(&app, "9401").await.is_some());
    for mrn in ["9402", "9403"] {
        assert!(patient_by_mrn(&app, mrn).await.is_none(), "{mrn}");
    }

    // Refusals count toward the connection's cap: the third is answered,
    // the fourth closes the connection.
    let stranger = from_facility(&a04("NO-3", "9404", "Sam", "sam@example.org"), "OTHER");
    assert_eq!(ack_code(&sender.send(&stranger).await), "AR");
    assert_eq!(sender.read_ack_of(&stranger).await, None);
    app.stop().await;
}

/// HL7 messages from `facility` go to the test practice.
async fn map_to_test_practice(app: &TestApp, facility: &str) {
    let mapped = app
        .http
        .put(app.url(&format!("/api/hl7/facilities/{facility}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"practice_code": "TEST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(mapped.status(), StatusCode::OK);
}

/// One message over a new TLS connection; `None` when the server refused
/// the connection or closed it without answering.
async fn over_tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    message: &[u8],
) -> Option<String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    let mut frame = vec![0x0B];
    frame.extend_from_slice(message);
    frame.extend([0x1C, 0x0D]);
    tls.write_all(&frame).await.ok()?;
    let mut answer = Vec::new();
    while !answer.ends_with(&[0x1C, 0x0D]) {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk)).await;
        match read.expect("the server answers or closes within 30 s") {
            Ok(n) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    Some(
        text.trim_start_matches('\u{b}')
            .trim_end_matches(['\u{1c}', '\r'])
            .to_string(),
    )
}

#[tokio::test]
async fn client_certificates_tie_a_tls_connection_to_its_facilities() {
    use crate::pki::{TestCa, connector, or_skip};
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let made = TestCa::new(dir.path()).and_then(|ca| {
        let server = ca.issue("server", "IP:127.0.0.1")?;
        let ehr = ca.issue("ehr", "DNS:ehr.genhosp.example")?;
        let lab = ca.issue("lab", "DNS:lab.example")?;
        // The right name, from a CA the server does not trust.
        let forged = TestCa::new(other.path())?.issue("forged", "DNS:ehr.genhosp.example")?;
        Some((ca, server, ehr, lab, forged))
    });
    let Some((ca, server, ehr, lab, forged)) = or_skip(made) else {
        return;
    };
    let mutual = |settings: &mut enroll_server::Settings| {
        settings.mllp.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        settings.mllp.tls_cert = Some(server.cert.clone());
        settings.mllp.tls_key = Some(server.key.clone());
        settings.mllp.tls_client_ca = Some(ca.pem.cert.clone());
        settings.mllp.senders = vec![
            sender_rule("GENHOSP", &[], &["ehr.genhosp.example"]),
            sender_rule("LAB", &[], &[]),
        ];
    };
    let Some(app) = TestApp::start_with(enroll_store::testing::Engine::Sqlite, mutual).await else {
        return;
    };
    let tls_addr = app.mllp_tls_addr.expect("a TLS port");
    for facility in ["GENHOSP", "LAB"] {
        map_to_test_practice(&app, facility).await;
    }
    let genhosp =
        |id: &str, mrn: &str| from_facility(&a04(id, mrn, "Tove", "tove@example.org"), "GENHOSP");

    let as_ehr = connector(&ca.pem.cert, Some(&ehr));
    let taken = over_tls(tls_addr, &as_ehr, &genhosp("EHR-1", "9501")).await;
    assert_eq!(taken.as_deref().map(ack_code), Some("AA"), "{taken:?}");

    // The lab's certificate is good, but not for the hospital's messages.
    let as_lab = connector(&ca.pem.cert, Some(&lab));
    let refused = over_tls(tls_addr, &as_lab, &genhosp("LAB-1", "9502"))
        .await
        .expect("an answer");
    assert_refused(&refused, "not issued to the sending facility \"GENHOSP\"");
    let lab_own = from_facility(&a04("LAB-2", "9503", "Uma", "uma@example.org"), "LAB");
    let taken = over_tls(tls_addr, &as_lab, &lab_own).await;
    assert_eq!(taken.as_deref().map(ack_code), Some("AA"), "{taken:?}");

    // Without a certificate, or with one the CA did not sign, the
    // handshake fails and nothing is answered.
    let anonymous = connector(&ca.pem.cert, None);
    assert_eq!(over_tls(tls_addr, &anonymous, &lab_own).await, None);
    let as_forger = connector(&ca.pem.cert, Some(&forged));
    assert_eq!(
        over_tls(tls_addr, &as_forger, &genhosp("F-1", "9504")).await,
        None
    );

    // The plain port has no certificate to show.
    let plain = Sender::connect(app.mllp_addr)
        .await
        .send(&genhosp("PLAIN-1", "9505"))
        .await;
    assert_refused(&plain, "must send over the TLS port");
    assert_eq!(stored_control_ids(&app).await, ["EHR-1", "LAB-2"]);

    // The administrator sees the rules on the Connections page.
    let ada = crate::ui::Staff::sign_in(&app, "ada").await;
    let path = format!("/admin/practices/{}/connections", app.practice_id);
    let (status, page) = ada.get(&path).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    for shown in [
        "<code>GENHOSP</code> <span class=\"muted\">from any allowed address, over TLS with a client certificate for ehr.genhosp.example</span>",
        "<code>LAB</code> <span class=\"muted\">from any allowed address</span>",
        &format!("Listening on {tls_addr}, TLS with client certificates</h3>"),
    ] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    app.stop().await;

    // The TLS port's own allowlist: this machine may use the plain port only.
    let plain_only = |settings: &mut enroll_server::Settings| {
        mutual(settings);
        settings.mllp.tls_allow = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    };
    let Some(app) = TestApp::start_with(enroll_store::testing::Engine::Sqlite, plain_only).await
    else {
        return;
    };
    let tls_addr = app.mllp_tls_addr.expect("a TLS port");
    map_to_test_practice(&app, "LAB").await;
    assert_eq!(over_tls(tls_addr, &as_lab, &lab_own).await, None);
    let lab_plain = Sender::connect(app.mllp_addr).await.send(&lab_own).await;
    assert_eq!(ack_code(&lab_plain), "AA", "{lab_plain}");
    app.stop().await;
}

#[tokio::test]
async fn the_same_message_racing_on_eight_connections_is_applied_once() {
    on_each_engine(async |app: &TestApp| {
        let message = a04("RACE-1", "9401", "Zoe", "zoe@example.org");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (addr, message) = (app.mllp_addr, message.clone());
            tasks.spawn(async move { Sender::connect(addr).await.send(&message).await });
        }
        let mut acks = Vec::new();
        while let Some(ack) = tasks.join_next().await {
            acks.push(ack.unwrap());
        }
        assert!(
            acks.iter().all(|a| a == &acks[0] && ack_code(a) == "AA"),
            "{acks:?}"
        );
        let (_, applied) = app.admin_get("/api/hl7/messages?status=applied").await;
        assert_eq!(applied.as_array().unwrap().len(), 1, "{:?}", app.engine);
        let (_, dups) = app.admin_get("/api/hl7/messages?status=duplicate").await;
        assert_eq!(dups.as_array().unwrap().len(), 7);
        assert_eq!(invites_of(app, "9401").await.len(), 1);
    })
    .await;
}

async fn within_10s<T>(wait: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("within 10 s")
}

async fn count(app: &TestApp, table: &str) -> i64 {
    enroll_store::testing::scalar(&app.db.store, &format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn no_ack_byte_is_sent_before_the_commit_completes() {
    on_each_engine(async |app: &TestApp| {
        app.faults.hold();
        let mut sender = Sender::connect(app.mllp_addr).await;
        sender
            .write_frame(&a04("HOLD-1", "9501", "Ida", "ida@example.org"))
            .await;
        // Everything is written; only the COMMIT is waiting.
        within_10s(app.faults.held(1)).await;
        sender
            .assert_silent_for(
                Duration::from_millis(300),
                "no ACK while the commit is held",
            )
            .await;
        assert_eq!(count(app, "hl7_messages").await, 0, "not committed yet");
        app.faults.release();
        let ack = sender.read_ack().await.expect("the ACK once committed");
        assert_eq!(ack_code(&ack), "AA", "{:?}: {ack}", app.engine);
        assert_eq!(count(app, "hl7_messages").await, 1);
        assert!(patient_by_mrn(app, "9501").await.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_failed_commit_gets_no_ack_and_the_resent_message_is_applied_once() {
    on_each_engine(async |app: &TestApp| {
        let message = a04("FAIL-1", "9601", "Eva", "eva@example.org");
        app.faults.fail_next(1);
        let mut sender = Sender::connect(app.mllp_addr).await;
        sender.write_frame(&message).await;
        // DESIGN section 6: nothing is answered and the connection closes,
        // so the sender sends again.
        assert_eq!(
            sender.read_ack().await,
            None,
            "{:?}: no answer to a message that was not committed",
            app.engine
        );
        for table in ["hl7_messages", "patients", "timeline", "invites"] {
            assert_eq!(count(app, table).await, 0, "{table}: nothing applied");
        }

        // The sender's resend, on a new connection, is applied once.
        let mut again = Sender::connect(app.mllp_addr).await;
        let ack = again.send(&message).await;
        assert_eq!(ack_code(&ack), "AA", "{ack}");
        let stored = app
            .db
            .store
            .hl7_messages(&Default::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "one message row: {stored:?}");
        assert_eq!(stored[0].status, enroll_store::MessageStatus::Applied);
        assert_eq!(count(app, "patients").await, 1);
        let id = patient_by_mrn(app, "9601").await.unwrap()["id"]
            .as_i64()
            .unwrap();
        let kinds = app.timeline_kinds(id).await;
        assert_eq!(
            kinds.iter().filter(|k| *k == "chart_added").count(),
            1,
            "one trigger: {kinds:?}"
        );
        assert_eq!(count(app, "invites").await, 1, "one invite");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Intake never stalls (issue 13, item 1): every message gets an answer the
// sender can act on, and its raw bytes are kept.
// ---------------------------------------------------------------------------

/// The stored rows with this control id (as stored), oldest first.
async fn stored_with_control_id(
    app: &TestApp,
    control_id: &str,
) -> Vec<enroll_store::StoredMessage> {
    let query = enroll_store::MessageQuery {
        control_id: Some(control_id.to_string()),
        ..Default::default()
    };
    let mut rows = app.db.store.hl7_messages(&query).await.unwrap();
    rows.reverse();
    rows
}

async fn raw_of(app: &TestApp, id: i64) -> Vec<u8> {
    let stored = app.db.store.hl7_message(id).await.unwrap().unwrap();
    stored.raw.unwrap()
}

/// A NUL is what the issue saw stop PostgreSQL: sent raw, or as the HL7
/// hex escape that decodes to the same character.
const NULS: [(&str, &str); 2] = [("raw", "\0"), ("escaped", "\\X00\\")];

#[tokio::test]
async fn a_nul_in_a_patient_field_is_answered_ae_naming_the_field_and_the_raw_bytes_are_kept() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        for (n, (how, nul)) in NULS.iter().enumerate() {
            let control_id = format!("NUL-NAME-{n}");
            let mrn = format!("930{n}");
            let message = String::from_utf8(a04(&control_id, &mrn, "Ana", "ana@example.org"))
                .unwrap()
                .replace("||Lopez^Ana^", &format!("||Lo{nul}pez^Ana^"))
                .into_bytes();
            let ack = sender.send(&message).await;
            assert_eq!(ack_code(&ack), "AE", "{:?} {how}: {ack}", app.engine);
            assert_eq!(
                field(&ack, "MSA", 2),
                control_id,
                "{how}: MSA-2 echoes MSH-10"
            );
            assert_eq!(
                field(&ack, "ERR", 2),
                "PID^1^5",
                "{how}: ERR-2 names PID-5: {ack}"
            );
            assert!(
                field(&ack, "ERR", 3).starts_with("102^"),
                "{how}: data type error: {ack}"
            );
            assert!(
                patient_by_mrn(app, &mrn).await.is_none(),
                "{how}: nothing applied"
            );
            let rows = stored_with_control_id(app, &control_id).await;
            assert_eq!(rows.len(), 1, "{how}: one row for staff: {rows:?}");
            assert_eq!(rows[0].status, enroll_store::MessageStatus::Error);
            assert_eq!(rows[0].error_location.as_deref(), Some("PID-5"));
            assert_eq!(
                raw_of(app, rows[0].id).await,
                message,
                "{how}: the raw bytes, byte for byte"
            );
        }
        // The connection is still open and the next message goes through.
        let ack = sender
            .send(&a04("NUL-NAME-OK", "9309", "Ana", "ana@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{ack}");
        let (_, errors) = app.admin_get("/api/hl7/messages?status=error").await;
        assert_eq!(
            errors.as_array().unwrap().len(),
            2,
            "listed for staff: {errors}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_nul_in_msh_10_is_stored_escaped_with_a_note_and_answered_with_msa_2_echoing_it() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        for (n, (how, nul)) in NULS.iter().enumerate() {
            let control_id = format!("NUL{nul}ID-{n}");
            let mrn = format!("931{n}");
            let message = a04(&control_id, &mrn, "Ana", "ana@example.org");
            let ack = sender.send(&message).await;
            assert_eq!(ack_code(&ack), "AA", "{:?} {how}: {ack}", app.engine);
            // Echoed as the HL7 escape of the same text, so the sender's
            // parser reads back exactly the control id it sent.
            let echoed = format!("NUL\\X00\\ID-{n}");
            assert_eq!(field(&ack, "MSA", 2), echoed, "{how}: {ack:?}");
            assert!(patient_by_mrn(app, &mrn).await.is_some(), "{how}: applied");
            let rows = stored_with_control_id(app, &echoed).await;
            assert_eq!(rows.len(), 1, "{how}: stored escaped: {rows:?}");
            let (_, shown) = app
                .admin_get(&format!("/api/hl7/messages/{}", rows[0].id))
                .await;
            let notes = shown["notes"].as_str().unwrap_or_default();
            assert!(
                notes.contains("MSH-10"),
                "{how}: the note says where: {shown}"
            );
            assert_eq!(
                raw_of(app, rows[0].id).await,
                message,
                "{how}: the raw bytes"
            );
            // A resend is still recognised as the same message.
            let again = sender.send(&message).await;
            assert_eq!(again, ack, "{how}: the original ACK");
            let rows = stored_with_control_id(app, &echoed).await;
            assert_eq!(rows.len(), 2, "{how}: {rows:?}");
            assert_eq!(rows[1].status, enroll_store::MessageStatus::Duplicate);
        }
        // Reprocessing reads the raw bytes again, NUL and all: it must
        // store what it applies as well as the first arrival did.
        let message = String::from_utf8(a04("NUL\0FAC", "9319", "Ana", "ana@example.org"))
            .unwrap()
            .replace("|EPIC|TEST|", "|EPIC|NULSIDE|");
        let ack = sender.send(message.as_bytes()).await;
        assert_eq!(ack_code(&ack), "AE", "unmapped facility: {ack}");
        let id = stored_with_control_id(app, "NUL\\X00\\FAC").await[0].id;
        let mapped = app
            .http
            .put(app.url("/api/hl7/facilities/NULSIDE"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"practice_code": "TEST"}))
            .send()
            .await
            .unwrap();
        assert_eq!(mapped.status(), StatusCode::OK);
        let (status, reprocessed) = app
            .admin_post(&format!("/api/hl7/messages/{id}/reprocess"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{:?}: {reprocessed}", app.engine);
        assert_eq!(reprocessed["status"], "applied", "{reprocessed}");
        assert!(patient_by_mrn(app, "9319").await.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_malformed_msh_2_is_rejected_with_msa_2_echoing_msh_10() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        let message = String::from_utf8(a04("BAD-MSH2", "9320", "Ana", "ana@example.org"))
            .unwrap()
            .replace("MSH|^~\\&|", "MSH|^^\\&|");
        let ack = sender.send(message.as_bytes()).await;
        assert_eq!(ack_code(&ack), "AR", "{:?}: {ack}", app.engine);
        assert_eq!(field(&ack, "MSA", 2), "BAD-MSH2", "{ack}");
        let rows = stored_with_control_id(app, "BAD-MSH2").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].status, enroll_store::MessageStatus::Rejected);
        // The sender fixes MSH-2 and sends the same control id again: it is
        // read afresh, not answered with the first AR.
        let fixed = a04("BAD-MSH2", "9320", "Ana", "ana@example.org");
        let ack = sender.send(&fixed).await;
        assert_eq!(ack_code(&ack), "AA", "{ack}");
        assert!(patient_by_mrn(app, "9320").await.is_some());
    })
    .await;
}

/// Enroll Now as Frida with an `Idempotency-Key`.
async fn enroll_with_key(app: &TestApp, id: i64, key: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url(&format!("/api/patients/{id}/enroll")))
        .bearer_auth(crate::TOKEN)
        .header("Idempotency-Key", key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_merge_of_charts_whose_invites_share_an_idempotency_key_keeps_both_invites() {
    on_each_engine(async |app: &TestApp| {
        let mut sender = Sender::connect(app.mllp_addr).await;
        for (control, mrn) in [("K-1", "9001"), ("K-2", "9002")] {
            let ack = sender.send(&a04(control, mrn, "Eva", "eva@example.org")).await;
            assert_eq!(ack_code(&ack), "AA");
        }
        let id = async |mrn| patient_by_mrn(app, mrn).await.unwrap()["id"].as_i64().unwrap();
        let (survivor, merged) = (id("9001").await, id("9002").await);
        // The same client key on both charts: unique per patient, so both
        // are taken, until the merge brings them onto one chart.
        let mut keyed = Vec::new();
        for patient in [survivor, merged] {
            let (status, body) = enroll_with_key(app, patient, "front-desk-click-1").await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            keyed.push(body["invite"]["id"].as_i64().unwrap());
        }
        let ack = sender
            .send(&hl7(&[
                &msh("ADT^A40^ADT_A39", "K-3"),
                "EVN|A40|20261125100000",
                "PID|1||9001^^^TEST^MR||Lopez^Eva||19800214|F|||12 Elm St^^New York^NY^10027||^NET^Internet^eva@example.org",
                "MRG|9002^^^TEST^MR",
            ]))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{:?}: {ack}", app.engine);
        // Both keyed invites are the survivor's now, and both count (R7):
        // 2 auto (one coalesced away) + 2 manual = 3 counted sends.
        let invites = app.invites(survivor).await;
        let ids: Vec<i64> = invites.iter().filter_map(|i| i["id"].as_i64()).collect();
        assert!(keyed.iter().all(|k| ids.contains(k)), "{keyed:?} in {invites:?}");
        assert_eq!(states_of(&invites), "cancelled queued queued queued", "{invites:?}");
        // The key on the survivor still replays the survivor's own invite.
        let (status, body) = enroll_with_key(app, survivor, "front-desk-click-1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["invite"]["id"].as_i64(), Some(keyed[0]), "{body}");
        // The 4th counted send is taken, the 5th is refused: both charts'
        // history counts.
        let (status, body) = app.enroll(survivor).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = app.enroll(survivor).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    })
    .await;
}

/// A trigger that makes the database refuse every new patient: a storage
/// error that trying again cannot cure.
async fn refuse_new_patients(app: &TestApp) {
    let statements: &[&str] = match app.engine {
        enroll_store::testing::Engine::Sqlite => {
            &["CREATE TRIGGER refuse_patients BEFORE INSERT ON patients \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"]
        }
        enroll_store::testing::Engine::Postgres => &[
            "CREATE FUNCTION refuse_patients() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$",
            "CREATE TRIGGER refuse_patients BEFORE INSERT ON patients \
             FOR EACH ROW EXECUTE FUNCTION refuse_patients()",
        ],
    };
    for sql in statements {
        app.db.execute(sql).await.unwrap();
    }
}

#[tokio::test]
async fn a_storage_error_that_is_not_transient_is_answered_ae_and_listed_for_staff() {
    on_each_engine(async |app: &TestApp| {
        refuse_new_patients(app).await;
        let message = a04("PERM-1", "9330", "Ana", "ana@example.org");
        let mut sender = Sender::connect(app.mllp_addr).await;
        let ack = within_10s(sender.read_ack_of(&message)).await;
        let ack =
            ack.unwrap_or_else(|| panic!("{:?}: an answer, not a closed connection", app.engine));
        assert_eq!(ack_code(&ack), "AE", "{ack}");
        assert_eq!(field(&ack, "MSA", 2), "PERM-1");
        assert!(
            field(&ack, "ERR", 3).starts_with("207^"),
            "internal error: {ack}"
        );
        assert!(
            !ack.contains("Lopez") && !ack.contains("9330"),
            "no patient data: {ack}"
        );
        assert!(patient_by_mrn(app, "9330").await.is_none());
        let (_, errors) = app.admin_get("/api/hl7/messages?status=error").await;
        let errors = errors.as_array().unwrap();
        assert_eq!(errors.len(), 1, "listed for staff: {errors:?}");
        assert_eq!(errors[0]["control_id"], "PERM-1");
        let id = errors[0]["id"].as_i64().unwrap();
        assert_eq!(raw_of(app, id).await, message, "the raw bytes");
        // The sender's resend is answered the same way at once: no loop.
        let again = sender.send(&message).await;
        assert_eq!(again, ack, "the stored AE");
        // Staff fix the cause and reprocess the message.
        app.db
            .execute("DROP TRIGGER refuse_patients ON patients")
            .await
            .ok();
        app.db.execute("DROP TRIGGER refuse_patients").await.ok();
        let (status, body) = app
            .admin_post(&format!("/api/hl7/messages/{id}/reprocess"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "applied", "{body}");
        assert!(patient_by_mrn(app, "9330").await.is_some());
    })
    .await;
}

/// `[mllp] allow`: an address outside the blocks is closed before a byte
/// is read; inside, messages are taken.
#[tokio::test]
async fn only_addresses_in_the_allowlist_may_connect() {
    for engine in enroll_store::testing::ENGINES {
        let elsewhere = |settings: &mut enroll_server::Settings| {
            settings.mllp.allow = vec!["10.20.0.0/16".parse().unwrap()];
        };
        let Some(app) = TestApp::start_with(engine, elsewhere).await else {
            continue;
        };
        let mut refused = Sender::connect(app.mllp_addr).await;
        refused
            .write_frame(&a04("ALLOW-1", "9301", "Ida", "ida@example.org"))
            .await;
        assert_eq!(refused.read_ack().await, None, "{engine:?}: closed, no ACK");
        assert_eq!(
            count(&app, "hl7_messages").await,
            0,
            "{engine:?}: nothing stored"
        );
        app.stop().await;

        let here = |settings: &mut enroll_server::Settings| {
            settings.mllp.allow = vec!["127.0.0.0/8".parse().unwrap()];
        };
        let Some(app) = TestApp::start_with(engine, here).await else {
            continue;
        };
        let mut sender = Sender::connect(app.mllp_addr).await;
        let ack = sender
            .send(&a04("ALLOW-2", "9302", "Ida", "ida@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{engine:?}: {ack}");
        app.stop().await;
    }
}

/// A connection sending frames that are not HL7 is closed once it has made
/// us store `rejected_frames_per_minute` of them; another connection still
/// gets its ACK. And past `max_connections` a connection is closed at once.
#[tokio::test]
async fn a_noisy_connection_is_capped_and_connections_are_limited() {
    for engine in enroll_store::testing::ENGINES {
        let capped = |settings: &mut enroll_server::Settings| {
            settings.mllp.rejected_frames_per_minute = 3;
            settings.mllp.max_connections = 2;
        };
        let Some(app) = TestApp::start_with(engine, capped).await else {
            continue;
        };
        let mut noisy = Sender::connect(app.mllp_addr).await;
        // Each start byte cuts the frame before it short: 9 bad frames.
        noisy
            .write_frame(&b"\x0bA\x0bB\x0bC\x0bD\x0bE\x0bF\x0bG\x0bH\x0bI"[..])
            .await;
        let mut answers = 0;
        while noisy.read_ack().await.is_some() {
            answers += 1;
        }
        assert_eq!(answers, 3, "{engine:?}: three answered, then closed");
        assert_eq!(count(&app, "hl7_messages").await, 3, "{engine:?}");

        let mut first = Sender::connect(app.mllp_addr).await;
        let mut second = Sender::connect(app.mllp_addr).await;
        let ack = first
            .send(&a04("LIMIT-1", "9311", "Jo", "jo@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{engine:?}: {ack}");
        let ack = second
            .send(&a04("LIMIT-2", "9312", "Jo", "jo@example.org"))
            .await;
        assert_eq!(ack_code(&ack), "AA", "{engine:?}: {ack}");
        let mut third = Sender::connect(app.mllp_addr).await;
        assert_eq!(
            third.read_ack().await,
            None,
            "{engine:?}: over the limit, closed"
        );
        drop((first, second));
        app.stop().await;
    }
}
