//! `enroll import roster.csv --practice CODE`: a roster export loaded with
//! a progress bar, each rejected row said with its line number, and a
//! summary at the end.

use std::path::Path;

use anyhow::{Context, bail};
use enroll_core::HeaderMap;
use enroll_server::roster::{BatchDone, import_roster};
use enroll_store::{Source, Store};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;

use crate::CLI_ACTOR;

pub(crate) async fn run(
    store: &Store,
    file: &Path,
    practice: &str,
    map: &[String],
) -> anyhow::Result<()> {
    let map = HeaderMap::parse(map.iter().map(String::as_str))?;
    let practice = store.practice_by_code(practice).await?.with_context(|| {
        format!("there is no practice with code {practice:?} (see `enroll practice add`)")
    })?;
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = opened.metadata().map(|m| m.len()).unwrap_or(0);
    // Drawn on stderr, and hidden by indicatif itself when that is not a
    // terminal (a script's log gets the rejected rows and the summary only).
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = Source::new("csv", Some(CLI_ACTOR))
        .with_reference(name.clone())
        .audited("patient.import");
    let mut rows = 0u64;
    let report = |batch: &BatchDone| {
        for rejected in &batch.rejected {
            let line = format!("line {}: {}", rejected.line, rejected.problem);
            // A hidden bar prints nothing, not even its println.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        rows += batch.counts.rows() + batch.rejected.len() as u64;
        bar.set_position(batch.bytes_read);
        bar.set_message(format!("{rows} rows"));
    };
    let result = import_roster(
        store,
        practice.id,
        opened,
        map,
        &source,
        Timestamp::now(),
        report,
    )
    .await;
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("importing {}", file.display()))?;
    let counts = summary.counts;
    println!(
        "{name}: {} rows for practice {}: {} created, {} updated, {} unchanged, {} rejected",
        counts.rows() + summary.rejected,
        practice.code,
        counts.created,
        counts.updated,
        counts.unchanged,
        summary.rejected
    );
    if summary.rejected > 0 {
        bail!(
            "{} rows were not imported (their line numbers and reasons are above); \
             fix them and import the file again (the rows already imported will not change)",
            summary.rejected
        );
    }
    Ok(())
}
