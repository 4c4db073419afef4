//! "Load a roster" (issue #15 item 2): the Integration Tool's upload of a
//! practice's CSV export at go-live. The page says which columns a roster
//! needs, takes the file, and checks its header at once: a column Enroll
//! does not know gets a choice of what it holds, next to the file field.
//! The import itself (`crate::roster::import_roster`, the same as
//! `enroll import`) then runs in the background while the page shows its
//! progress, and ends with the summary and each rejected row's line number
//! and reason. Importing sends no invite: "Invite existing patients" does.
//!
//! The upload is spooled to an unnamed temporary file (readable by us
//! only, gone when the import ends), so a file of a million rows is never
//! held in memory. What an import did is kept in memory per practice, the
//! latest only: after a restart the page forgets it, but the rows written
//! stay written and their timeline and audit lines say so; loading the
//! file again finishes the job (rows already loaded change nothing).

use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom};
use std::sync::{Mutex, MutexGuard};

use axum::Json;
use axum::extract::multipart::{Field as Part, Multipart};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use enroll_core::{Field, HeaderMap, HeaderProblems, RosterColumn};
use enroll_store::{Practice, RosterCounts, Source};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use minijinja::context;
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::super::session::SignedIn;
use super::super::{csv_download, internal, local_time, staff_page};
use super::{AdminPractice, ToolQuery, practice_for_admin_form};
use crate::AppState;
use crate::roster::{BatchDone, ImportError, ImportSummary, check_roster_header, import_roster};

/// Rejected rows kept for the page and its CSV: enough for any export a
/// person would fix by hand; beyond it the count still says how many.
const REJECTED_KEPT: usize = 10_000;
/// Rejected rows listed on the page itself; the CSV has all that are kept.
const REJECTED_SHOWN: usize = 100;

fn page_path(practice_id: i64) -> String {
    format!("/admin/practices/{practice_id}/roster")
}

/// The latest import of each practice (see the module's words).
#[derive(Default)]
pub(crate) struct RosterImports(Mutex<HashMap<i64, RosterImport>>);

impl RosterImports {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, RosterImport>> {
        // A panic while the lock was held left numbers, not a broken
        // invariant: the map is still fit to read.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn latest(&self, practice_id: i64) -> Option<RosterImport> {
        self.lock().get(&practice_id).cloned()
    }

    /// Records a new import unless one is still running for the practice;
    /// that one's file name when it is.
    fn begin(&self, practice_id: i64, import: RosterImport) -> Result<(), String> {
        let mut imports = self.lock();
        match imports.get(&practice_id) {
            Some(running) if running.finished.is_none() => Err(running.file_name.clone()),
            _ => {
                imports.insert(practice_id, import);
                Ok(())
            }
        }
    }

    fn batch_done(&self, practice_id: i64, batch: &BatchDone) {
        if let Some(import) = self.lock().get_mut(&practice_id) {
            import.counts.add(batch.counts);
            import.bytes_read = batch.bytes_read;
            import.rejected_count += batch.rejected.len() as u64;
            let room = REJECTED_KEPT.saturating_sub(import.rejected.len());
            import.rejected.extend(
                batch
                    .rejected
                    .iter()
                    .take(room)
                    .map(|r| (r.line, r.problem.to_string())),
            );
        }
    }

    fn finish(&self, practice_id: i64, result: Result<ImportSummary, ImportError>, at: Timestamp) {
        if let Some(import) = self.lock().get_mut(&practice_id) {
            import.finished = Some(at);
            match result {
                Ok(_) => import.bytes_read = import.bytes_total,
                Err(e) => {
                    // The store's own words stay in the log; the page says
                    // what to do.
                    tracing::error!(error = %e, practice_id, "roster import stopped");
                    import.failure = Some(failure_words(&e));
                }
            }
        }
    }
}

fn failure_words(e: &ImportError) -> String {
    let what = match e {
        ImportError::Read(problem) => format!("the file could not be read further ({problem})"),
        ImportError::Store(_) => {
            "the patients could not be written (the server's log says why)".into()
        }
        ImportError::Header(_) | ImportError::NoHeader => e.to_string(),
    };
    format!(
        "The import stopped: {what}. The rows before that point were loaded; \
         load the file again to finish (rows already loaded will not change)."
    )
}

/// What one import did so far.
#[derive(Debug, Clone)]
struct RosterImport {
    file_name: String,
    started_by: String,
    started: Timestamp,
    finished: Option<Timestamp>,
    bytes_total: u64,
    bytes_read: u64,
    counts: RosterCounts,
    rejected_count: u64,
    /// (line, problem), the first [`REJECTED_KEPT`].
    rejected: Vec<(u64, String)>,
    failure: Option<String>,
}

/// A [`RosterImport`] as the page and its script show it.
#[derive(Serialize)]
struct ImportView {
    file_name: String,
    started_by: String,
    started: String,
    finished: Option<String>,
    running: bool,
    percent: u64,
    rows: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    rejected: u64,
    failure: Option<String>,
}

impl ImportView {
    fn of(import: &RosterImport, tz: &TimeZone) -> ImportView {
        let percent = (import.bytes_read * 100)
            .checked_div(import.bytes_total)
            .unwrap_or(100)
            .min(100);
        ImportView {
            file_name: import.file_name.clone(),
            started_by: import.started_by.clone(),
            started: local_time(import.started, tz),
            finished: import.finished.map(|at| local_time(at, tz)),
            running: import.finished.is_none(),
            percent,
            rows: import.counts.rows() + import.rejected_count,
            created: import.counts.created,
            updated: import.counts.updated,
            unchanged: import.counts.unchanged,
            rejected: import.rejected_count,
            failure: import.failure.clone(),
        }
    }
}

/// `GET /admin/practices/{id}/roster`.
pub(crate) async fn page(
    State(state): State<AppState>,
    AdminPractice(signed_in, practice, Query(q)): AdminPractice<Query<ToolQuery>>,
) -> Response {
    RosterPage {
        notice: q.notice.as_deref(),
        ..RosterPage::new(&practice)
    }
    .render(&state, &signed_in, StatusCode::OK)
}

/// `GET /admin/practices/{id}/roster/progress`: the latest import's
/// numbers as JSON, for the page's script.
pub(crate) async fn progress(
    State(state): State<AppState>,
    AdminPractice(_, practice, ()): AdminPractice,
) -> Response {
    let import = state.roster_imports.latest(practice.id);
    let view = import
        .as_ref()
        .map(|i| ImportView::of(i, &practice.schedule.tz));
    Json(json!({ "run": view })).into_response()
}

/// `GET /admin/practices/{id}/roster/rejected.csv`: the rejected rows'
/// line numbers and reasons (never a value from the file), to fix the
/// export with.
pub(crate) async fn rejected_csv(
    State(state): State<AppState>,
    AdminPractice(_, practice, ()): AdminPractice,
) -> Response {
    let Some(import) = state.roster_imports.latest(practice.id) else {
        return (
            StatusCode::NOT_FOUND,
            "No roster has been loaded since the server started.",
        )
            .into_response();
    };
    let body = match rejected_text(&import.rejected) {
        Ok(body) => body,
        Err(e) => return internal(e),
    };
    csv_download(&format!("rejected-rows-{}.csv", practice.code), body)
}

/// The rejected rows as CSV: line and problem.
fn rejected_text(rejected: &[(u64, String)]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["line", "problem"])?;
    for (line, problem) in rejected {
        out.write_record([line.to_string().as_str(), problem])?;
    }
    Ok(out.into_inner().map_err(|e| e.to_string())?)
}

/// The form as sent: the file spooled to disk and the column choices.
struct Upload {
    csrf: String,
    file_name: String,
    file: Option<(std::fs::File, u64)>,
    /// (header, column key or "" for not chosen), in the form's order.
    columns: Vec<(String, String)>,
}

/// `POST /admin/practices/{id}/roster/upload` (multipart): checks the
/// header and starts the import in the background.
pub(crate) async fn upload(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    multipart: Multipart,
) -> Response {
    let upload = match read_upload(multipart).await {
        Ok(upload) => upload,
        Err(problem) => {
            return (StatusCode::BAD_REQUEST, problem).into_response();
        }
    };
    let practice = match practice_for_admin_form(&state, &signed_in, id, &upload.csrf).await {
        Ok(practice) => practice,
        Err(refused) => return refused,
    };
    let refused = |errors, header| RosterPage {
        errors,
        header,
        columns: upload.columns.clone(),
        ..RosterPage::new(&practice)
    };
    let map = match header_map(&upload.columns) {
        Ok(map) => map,
        Err(problem) => {
            return refused(BTreeMap::from([("columns", problem)]), None).render(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    let Some((mut file, size)) = upload.file.filter(|(_, size)| *size > 0) else {
        let problem = "Choose the roster file (a CSV export) to load.".to_string();
        return refused(BTreeMap::from([("file", problem)]), None).render(
            &state,
            &signed_in,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    if let Err(problem) = check_header(&mut file, &map) {
        let (words, header) = match problem {
            ImportError::Header(problems) => (header_words(&problems), Some(problems)),
            other => (format!("{other}: is this a CSV file?"), None),
        };
        return refused(BTreeMap::from([("file", words)]), header).render(
            &state,
            &signed_in,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let now = state.clock.now();
    let import = RosterImport {
        file_name: upload.file_name.clone(),
        started_by: signed_in.user.username.clone(),
        started: now,
        finished: None,
        bytes_total: size,
        bytes_read: 0,
        counts: RosterCounts::default(),
        rejected_count: 0,
        rejected: vec![],
        failure: None,
    };
    if let Err(running) = state.roster_imports.begin(practice.id, import) {
        let problem =
            format!("{running} is still loading; wait for it to finish, then load the next file.");
        return refused(BTreeMap::from([("file", problem)]), None).render(
            &state,
            &signed_in,
            StatusCode::CONFLICT,
        );
    }
    let source = Source::new("csv", Some(&signed_in.user.username))
        .with_reference(upload.file_name)
        .audited("patient.import");
    tokio::spawn(run_import(
        state.clone(),
        practice.id,
        file,
        map,
        source,
        now,
    ));
    Redirect::to(&page_path(practice.id)).into_response()
}

async fn run_import(
    state: AppState,
    practice_id: i64,
    file: std::fs::File,
    map: HeaderMap,
    source: Source,
    now: Timestamp,
) {
    let imports = state.roster_imports.clone();
    let result = import_roster(
        &state.store,
        practice_id,
        file,
        map,
        &source,
        now,
        |batch| {
            imports.batch_done(practice_id, batch);
        },
    )
    .await;
    imports.finish(practice_id, result, state.clock.now());
}

/// Reads the form's parts in order: the file goes to a temporary file as
/// it arrives.
async fn read_upload(mut multipart: Multipart) -> Result<Upload, String> {
    let mut upload = Upload {
        csrf: String::new(),
        file_name: String::new(),
        file: None,
        columns: vec![],
    };
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        format!("The upload could not be read ({e}); choose the file and load it again.")
    };
    while let Some(part) = multipart.next_field().await.map_err(unreadable)? {
        match part.name().unwrap_or_default() {
            "csrf" => upload.csrf = part.text().await.map_err(unreadable)?,
            "map_header" => {
                let header = part.text().await.map_err(unreadable)?;
                upload.columns.push((header, String::new()));
            }
            "map_column" => {
                let column = part.text().await.map_err(unreadable)?;
                if let Some(last) = upload.columns.last_mut() {
                    last.1 = column;
                }
            }
            "file" => {
                upload.file_name = file_name(&part);
                upload.file = Some(spool(part).await?);
            }
            _ => {}
        }
    }
    Ok(upload)
}

/// The file's own name as the browser sent it, without any folder, for
/// the timeline and the page ("roster.csv").
fn file_name(part: &Part<'_>) -> String {
    let name = part.file_name().unwrap_or_default();
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() {
        "the roster".to_string()
    } else {
        name.chars().take(200).collect()
    }
}

/// Writes a part to an unnamed temporary file and rewinds it.
async fn spool(mut part: Part<'_>) -> Result<(std::fs::File, u64), String> {
    let disk = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot spool a roster upload");
        "The server could not store the upload for reading; tell your IT administrator (the server's log says why).".to_string()
    };
    let mut file = tokio::fs::File::from_std(tempfile::tempfile().map_err(disk)?);
    let mut size = 0u64;
    while let Some(chunk) = part.chunk().await.map_err(|e| {
        format!("The upload stopped before the file was complete ({e}); load it again.")
    })? {
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(disk)?;
    }
    file.flush().await.map_err(disk)?;
    let mut file = file.into_std().await;
    file.seek(SeekFrom::Start(0)).map_err(disk)?;
    Ok((file, size))
}

/// The header checked as the import will check it; the file is rewound.
fn check_header(file: &mut std::fs::File, map: &HeaderMap) -> Result<(), ImportError> {
    let result = check_roster_header(&mut *file, map);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ImportError::Read(e.to_string()))?;
    result
}

/// The column choices as a [`HeaderMap`]; a header left unchosen is no entry.
fn header_map(columns: &[(String, String)]) -> Result<HeaderMap, String> {
    let entries: Vec<String> = columns
        .iter()
        .filter(|(_, column)| !column.is_empty())
        .map(|(header, column)| format!("{header}={column}"))
        .collect();
    HeaderMap::parse(entries.iter().map(String::as_str))
        .map_err(|_| "Choose what each column holds from the list.".to_string())
}

/// The header's problems in the page's words (the CLI's speak of `--map`).
fn header_words(problems: &HeaderProblems) -> String {
    let mut words = Vec::new();
    if !problems.unknown.is_empty() {
        words.push(format!(
            "Enroll does not know {} of this file's columns: choose below what each holds (or to ignore it), then choose the file again.",
            problems.unknown.len()
        ));
    }
    if !problems.missing.is_empty() {
        let missing: Vec<&str> = problems.missing.iter().map(|c| column_words(*c)).collect();
        words.push(format!(
            "The file has no column for the {}. A roster needs the MRN and the six required fields; if the file names one differently, choose it below.",
            missing.join(", the ")
        ));
    }
    if !problems.repeated.is_empty() {
        let repeated: Vec<&str> = problems.repeated.iter().map(|c| column_words(*c)).collect();
        words.push(format!(
            "More than one column holds the {}; choose \"Ignore this column\" for all but one.",
            repeated.join(", the ")
        ));
    }
    if !problems.unused_mappings.is_empty() {
        words.push(
            "Some of the columns chosen below are not in this file: is it the same export?"
                .to_string(),
        );
    }
    words.join(" ")
}

fn column_words(column: RosterColumn) -> &'static str {
    match column {
        RosterColumn::Mrn => "MRN",
        RosterColumn::Field(field) => field.label(),
        RosterColumn::PreferredLanguage => "preferred language",
        RosterColumn::Ignored => "ignored column",
    }
}

/// The choices of a column's list: (key, words).
fn column_choices() -> Vec<(&'static str, String)> {
    let mut choices = vec![(RosterColumn::Mrn.key(), "MRN (chart number)".to_string())];
    choices.extend(
        Field::ALL
            .iter()
            .map(|f| (f.key(), f.heading().to_string())),
    );
    choices.push((
        RosterColumn::PreferredLanguage.key(),
        "Preferred language".into(),
    ));
    choices.push((RosterColumn::Ignored.key(), "Ignore this column".into()));
    choices
}

/// The column rows the form shows: the choices already made, then each
/// header of the file that is still unknown.
fn column_rows(columns: &[(String, String)], header: Option<&HeaderProblems>) -> Vec<ColumnRow> {
    let mut rows: Vec<ColumnRow> = columns
        .iter()
        .map(|(header, chosen)| ColumnRow {
            header: header.clone(),
            chosen: chosen.clone(),
        })
        .collect();
    for unknown in header.iter().flat_map(|h| &h.unknown) {
        if !rows.iter().any(|row| &row.header == unknown) {
            rows.push(ColumnRow {
                header: unknown.clone(),
                chosen: String::new(),
            });
        }
    }
    rows
}

#[derive(Serialize)]
struct ColumnRow {
    header: String,
    chosen: String,
}

struct RosterPage<'a> {
    practice: &'a Practice,
    /// "file", "columns" -> the problem in words.
    errors: BTreeMap<&'static str, String>,
    header: Option<HeaderProblems>,
    /// The column choices sent with the form, kept for the next try.
    columns: Vec<(String, String)>,
    notice: Option<&'a str>,
}

impl<'a> RosterPage<'a> {
    fn new(practice: &'a Practice) -> RosterPage<'a> {
        RosterPage {
            practice,
            errors: BTreeMap::new(),
            header: None,
            columns: vec![],
            notice: None,
        }
    }

    fn render(self, state: &AppState, signed_in: &SignedIn, status: StatusCode) -> Response {
        let practice = self.practice;
        let import = state.roster_imports.latest(practice.id);
        let tz = &practice.schedule.tz;
        let shown: Vec<_> = import
            .iter()
            .flat_map(|i| i.rejected.iter().take(REJECTED_SHOWN))
            .map(|(line, problem)| json!({ "line": line, "problem": problem }))
            .collect();
        staff_page(
            status,
            "staff_roster.html",
            signed_in,
            context! {
                practice => json!({ "id": practice.id, "name": practice.name, "code": practice.code }),
                import => import.as_ref().map(|i| ImportView::of(i, tz)),
                rejected_rows => shown,
                rejected_kept => import.as_ref().map_or(0, |i| i.rejected.len()),
                columns => column_rows(&self.columns, self.header.as_ref()),
                choices => column_choices().into_iter().map(|(key, words)| json!({ "key": key, "words": words })).collect::<Vec<_>>(),
                errors => self.errors,
                notice => self.notice,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_choices_make_a_header_map_and_unchosen_ones_are_left_out() {
        let columns = vec![
            ("Patient Number".to_string(), "mrn".to_string()),
            ("Gender".to_string(), String::new()),
        ];
        let expected = HeaderMap::parse(["Patient Number=mrn"]).unwrap();
        assert_eq!(header_map(&columns).unwrap(), expected);
        let tampered = vec![("Gender".to_string(), "shoe size".to_string())];
        assert!(header_map(&tampered).is_err());
    }

    #[test]
    fn header_problems_are_said_without_the_command_line_words() {
        let problems = HeaderProblems {
            unknown: vec!["Gender".into()],
            missing: vec![RosterColumn::Field(Field::BirthSex), RosterColumn::Mrn],
            repeated: vec![],
            unused_mappings: vec![],
        };
        let words = header_words(&problems);
        assert!(
            words.contains("does not know 1 of this file's columns"),
            "{words}"
        );
        assert!(
            words.contains("no column for the birth sex, the MRN"),
            "{words}"
        );
        assert!(!words.contains("--map"), "{words}");
    }

    #[test]
    fn the_form_keeps_the_choices_made_and_adds_the_headers_still_unknown() {
        let practice_columns = vec![("Patient Number".to_string(), "mrn".to_string())];
        let problems = HeaderProblems {
            unknown: vec!["Patient Number".into(), "Gender".into()],
            missing: vec![],
            repeated: vec![],
            unused_mappings: vec![],
        };
        let rows = column_rows(&practice_columns, Some(&problems));
        let seen: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.header.as_str(), r.chosen.as_str()))
            .collect();
        assert_eq!(seen, [("Patient Number", "mrn"), ("Gender", "")]);
    }

    #[test]
    fn an_import_keeps_its_counts_and_only_the_first_rejected_rows() {
        let imports = RosterImports::default();
        let import = RosterImport {
            file_name: "roster.csv".into(),
            started_by: "ada".into(),
            started: Timestamp::UNIX_EPOCH,
            finished: None,
            bytes_total: 1000,
            bytes_read: 0,
            counts: RosterCounts::default(),
            rejected_count: 0,
            rejected: vec![],
            failure: None,
        };
        imports.begin(7, import.clone()).unwrap();
        assert!(imports.begin(7, import.clone()).is_err(), "one at a time");
        let rejected = (0..REJECTED_KEPT as u64 + 5)
            .map(|line| crate::roster::RejectedRow {
                line,
                problem: enroll_core::RowProblem::NoMrn,
            })
            .collect();
        let batch = BatchDone {
            counts: RosterCounts {
                created: 3,
                updated: 1,
                unchanged: 2,
            },
            rejected,
            bytes_read: 400,
        };
        imports.batch_done(7, &batch);
        imports.finish(7, Ok(ImportSummary::default()), Timestamp::UNIX_EPOCH);
        let done = imports.latest(7).unwrap();
        assert_eq!(done.rejected.len(), REJECTED_KEPT);
        assert_eq!(done.rejected_count, REJECTED_KEPT as u64 + 5);
        let view = ImportView::of(&done, &TimeZone::UTC);
        assert_eq!(
            (view.rows, view.percent, view.running),
            (6 + REJECTED_KEPT as u64 + 5, 100, false)
        );
        assert!(
            imports.begin(7, import).is_ok(),
            "a finished import makes way"
        );
    }
}
