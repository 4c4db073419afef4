//! Throughput of the HL7 layer on one core: decode + parse, decode + parse +
//! map (what a listener does per message), and the same plus the ACK.
//!
//! `cargo run --release -p enroll-hl7 --example parse_bench [count]`
//! (default 100,000 ADT^A04 messages; the issue asks for >= 100,000/s).

use enroll_hl7::parse::{Message, decode};
use enroll_hl7::{MappingOptions, process};
use std::hint::black_box;
use std::time::Instant;

fn adt_a04(n: usize) -> Vec<u8> {
    let segments = [
        format!(
            "MSH|^~\\&|EPIC|NORTHCLINIC^1.2.840.114350.1^ISO|ENROLL|PORTAL|20260905120000-0500||ADT^A04^ADT_A01|MSG{n:08}|P|2.5.1|||AL|NE||UNICODE UTF-8"
        ),
        "EVN|A04|20260905120000|||JSMITH^Smith^John".to_string(),
        format!(
            "PID|1||{mrn}^^^NORTHCLINIC^MR~987654321^^^SSA^SS||O'Brien^Mary^Ann^^Ms.^^L||19850317|F|||123 Main St^Apt 4B^Springfield^IL^62701^USA^H||^PRN^PH^^1^217^5551234~^NET^Internet^mary{n}@example.com~^PRN^CP^^1^217^555{tail:04}|^WPN^PH^^1^217^5550000|en^English^ISO639|M|CAT|ACC{n}|||N",
            mrn = 100_000 + n,
            tail = n % 10_000
        ),
        "PD1|||North Clinic^^1234".to_string(),
        "NK1|1|O'Brien^John|SPO^Spouse|123 Main St^^Springfield^IL^62701|^PRN^PH^^1^217^5551234"
            .to_string(),
        format!(
            "PV1|1|O|CLINIC^101^1^NORTHCLINIC||||1234^Welby^Marcus^^^Dr.|||MED||||1|||1234^Welby^Marcus^^^Dr.|OP|V{n:08}^^^NORTHCLINIC^VN"
        ),
        "OBX|1|CWE|76689-9^Sex assigned at birth^LN||F^Female^HL7||||||F".to_string(),
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives".to_string(),
    ];
    let mut text = segments.join("\r");
    text.push('\r');
    text.into_bytes()
}

/// Three rounds of `count` messages; prints every round and the best (the
/// machine is shared, so the best round is the least disturbed one).
fn run(name: &str, messages: &[Vec<u8>], count: usize, mut f: impl FnMut(&[u8]) -> usize) {
    // Warm up.
    for m in messages.iter().take(1000) {
        black_box(f(m));
    }
    let mut rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut acc = 0usize;
        for i in 0..count {
            acc = acc.wrapping_add(f(&messages[i % messages.len()]));
        }
        let elapsed = start.elapsed();
        black_box(acc);
        rates.push(count as f64 / elapsed.as_secs_f64());
    }
    let best = rates.iter().copied().fold(0.0, f64::max);
    let rounds: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "{name:<28} {count} messages: best {best:>9.0} messages/s ({:.2} µs each); rounds {}",
        1e6 / best,
        rounds.join(", ")
    );
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let messages: Vec<Vec<u8>> = (0..1000).map(adt_a04).collect();
    let bytes: usize = messages.iter().map(Vec::len).sum::<usize>() / messages.len();
    println!("ADT^A04 of {bytes} bytes, 1 thread");
    let options = MappingOptions::default();

    run("decode + parse", &messages, count, |m| {
        let decoded = decode(m);
        Message::parse(&decoded.text)
            .map(|msg| msg.segment_count())
            .unwrap_or(0)
    });
    run("decode + parse + map", &messages, count, |m| {
        let inbound = process(m, &options);
        inbound.result.map(|e| e.patient().mrn.len()).unwrap_or(0)
    });
    run("decode + parse + map + ACK", &messages, count, |m| {
        let inbound = process(m, &options);
        inbound.ack("ACK00000001", "20260905120001").as_str().len()
    });

    // The whole machine: one thread per core, each with its share.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let messages = &messages;
            let options = &options;
            scope.spawn(move || {
                let mut acc = 0usize;
                for i in (t..count).step_by(threads) {
                    let inbound = process(&messages[i % messages.len()], options);
                    acc = acc
                        .wrapping_add(inbound.result.map(|e| e.patient().mrn.len()).unwrap_or(0));
                }
                black_box(acc)
            });
        }
    });
    let elapsed = start.elapsed();
    println!(
        "decode + parse + map, {threads} threads: {count} messages in {:>7.1} ms = {:>9.0} messages/s",
        elapsed.as_secs_f64() * 1000.0,
        count as f64 / elapsed.as_secs_f64()
    );
}
