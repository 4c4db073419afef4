//! Reading a roster file and importing it: `enroll import roster.csv
//! --practice CODE` and the admin page's upload both come here.
//!
//! The file is read as a stream on a blocking thread (the `csv` crate: quotes,
//! embedded newlines, line numbers), turned into patients batch by batch
//! (`enroll_core::RosterColumns`), and each batch is written in one
//! transaction (`Store::import_roster`) while the next is being read. At most
//! two batches wait between the reader and the writer, so a file of a
//! million rows is imported in bounded memory. A bad row is reported with
//! its line number and reason and the good rows load; a second import of
//! the same file changes nothing.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use enroll_core::{HeaderMap, HeaderProblems, PatientChange, RosterColumns, RowProblem};
use enroll_store::{RosterCounts, Source, Store, StoreError};
use jiff::Timestamp;
use tokio::sync::mpsc;

/// Rows written per transaction: large enough that a batch's fixed cost
/// (a commit, a few statements) is small beside its rows, small enough
/// that a batch's JSON stays well under a megabyte.
pub const ROSTER_BATCH_ROWS: usize = 5_000;

/// A row that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// The file's line number where the row starts (the header is line 1).
    pub line: u64,
    pub problem: RowProblem,
}

/// What one batch did, for a progress bar and a running report.
#[derive(Debug, Clone)]
pub struct BatchDone {
    pub counts: RosterCounts,
    pub rejected: Vec<RejectedRow>,
    /// Bytes of the file read so far.
    pub bytes_read: u64,
}

/// The import's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub counts: RosterCounts,
    pub rejected: u64,
}

/// Why an import stopped. Batches written before it stay written (a second
/// import of the same file picks up where this one stopped).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The header names columns Enroll does not know, or lacks some.
    #[error("{0}")]
    Header(#[from] HeaderProblems),
    #[error("the file has no header line")]
    NoHeader,
    #[error("reading the file: {0}")]
    Read(String),
    #[error("writing the patients: {0}")]
    Store(#[from] StoreError),
}

/// One batch read from the file.
struct ReadBatch {
    rows: Vec<PatientChange>,
    rejected: Vec<RejectedRow>,
    bytes_read: u64,
}

/// Imports the roster in `file` into the practice, calling `on_batch`
/// after each batch is committed. `source` is recorded on each chart's
/// timeline and, when it asks ([`Source::audited`]), in the audit log.
pub async fn import_roster<R: Read + Send + 'static>(
    store: &Store,
    practice_id: i64,
    file: R,
    map: HeaderMap,
    source: &Source,
    now: Timestamp,
    mut on_batch: impl FnMut(&BatchDone),
) -> Result<ImportSummary, ImportError> {
    // Checked before a row is read, so that a wrong practice is said at once.
    if store.practice(practice_id).await?.is_none() {
        return Err(StoreError::NotFound("practice").into());
    }
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (batch_tx, mut batch_rx) = mpsc::channel::<ReadBatch>(2);
    let reader = tokio::task::spawn_blocking(move || read_batches(file, &map, header_tx, batch_tx));
    let columns = header_rx.await.unwrap_or(Err(ImportError::NoHeader));
    if let Err(e) = columns {
        // The reader stopped at the header; its own result says nothing more.
        let _ = reader.await;
        return Err(e);
    }
    let mut summary = ImportSummary::default();
    while let Some(batch) = batch_rx.recv().await {
        let counts = store
            .import_roster(practice_id, &batch.rows, source, now)
            .await?;
        summary.counts.add(counts);
        summary.rejected += batch.rejected.len() as u64;
        on_batch(&BatchDone {
            counts,
            rejected: batch.rejected,
            bytes_read: batch.bytes_read,
        });
    }
    match reader.await {
        Ok(result) => result?,
        Err(e) => return Err(ImportError::Read(format!("the reader stopped: {e}"))),
    }
    Ok(summary)
}

/// The reader's side: the header (answered on `header`), then batches
/// until the file ends or the writer stops listening.
fn read_batches<R: Read>(
    file: R,
    map: &HeaderMap,
    header: tokio::sync::oneshot::Sender<Result<(), ImportError>>,
    batches: mpsc::Sender<ReadBatch>,
) -> Result<(), ImportError> {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let counted = CountingReader {
        inner: file,
        count: bytes_read.clone(),
    };
    let mut csv = roster_reader(counted);
    let columns = match header_columns(&mut csv, map) {
        Ok(columns) => {
            let _ = header.send(Ok(()));
            columns
        }
        Err(e) => {
            let _ = header.send(Err(e));
            return Ok(());
        }
    };
    let mut record = csv::ByteRecord::new();
    let mut batch = ReadBatch {
        rows: Vec::with_capacity(ROSTER_BATCH_ROWS),
        rejected: vec![],
        bytes_read: 0,
    };
    loop {
        let line = csv.position().line();
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                match row_patient(&columns, &record) {
                    Ok(patient) => batch.rows.push(patient),
                    Err(problem) => batch.rejected.push(RejectedRow { line, problem }),
                }
            }
            // A broken quote or an I/O error: the reader cannot say where
            // the next row starts, so the rows after it are not guessed at.
            Err(e) if e.is_io_error() => return Err(ImportError::Read(e.to_string())),
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                batch.rejected.push(RejectedRow {
                    line,
                    problem: RowProblem::Unreadable(csv_problem(&e)),
                });
            }
        }
        if batch.rows.len() >= ROSTER_BATCH_ROWS {
            batch.bytes_read = bytes_read.load(Ordering::Relaxed);
            let full = std::mem::replace(
                &mut batch,
                ReadBatch {
                    rows: Vec::with_capacity(ROSTER_BATCH_ROWS),
                    rejected: vec![],
                    bytes_read: 0,
                },
            );
            if batches.blocking_send(full).is_err() {
                // The writer stopped (it failed); it reports why.
                return Ok(());
            }
        }
    }
    batch.bytes_read = bytes_read.load(Ordering::Relaxed);
    let _ = batches.blocking_send(batch);
    Ok(())
}

/// Reads only the header of `file` and checks it as [`import_roster`]
/// would, so that the admin page can say what is wrong with the columns
/// before it starts an import in the background.
pub fn check_roster_header<R: Read>(file: R, map: &HeaderMap) -> Result<(), ImportError> {
    header_columns(&mut roster_reader(file), map).map(|_| ())
}

fn roster_reader<R: Read>(file: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        // Rows with too few or too many fields are reported by the
        // columns' own check, with the counts, instead of stopping here.
        .flexible(true)
        // Rows end at '\n' only, and the '\r' of a CRLF file is trimmed
        // with the last cell: with CRLF as one terminator the reader dates
        // each row from the previous line's '\n', one line early.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(file)
}

fn header_columns<R: Read>(
    csv: &mut csv::Reader<R>,
    map: &HeaderMap,
) -> Result<RosterColumns, ImportError> {
    let headers = csv
        .byte_headers()
        .map_err(|e| ImportError::Read(csv_problem(&e)))?;
    if headers.is_empty() {
        return Err(ImportError::NoHeader);
    }
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    Ok(RosterColumns::from_headers(
        names.iter().map(String::as_str),
        map,
    )?)
}

/// One record's patient; a field that is not UTF-8 makes the row unreadable.
fn row_patient(
    columns: &RosterColumns,
    record: &csv::ByteRecord,
) -> Result<PatientChange, RowProblem> {
    let mut cells = Vec::with_capacity(record.len());
    for field in record.iter() {
        let text = std::str::from_utf8(field).map_err(|_| {
            RowProblem::Unreadable(
                "the row is not UTF-8 text; save the file as CSV UTF-8 and import it again".into(),
            )
        })?;
        cells.push(text);
    }
    columns.patient(cells)
}

/// A CSV error in words, without the row's content.
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "the row is not UTF-8 text; save the file as CSV UTF-8 and import it again".into()
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the row has {len} fields where the header has {expected_len}"),
        _ => "the row is not valid CSV".into(),
    }
}

/// Counts the bytes read, for the progress bar.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
