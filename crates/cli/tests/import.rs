//! `enroll import roster.csv --practice CODE` as an administrator runs it:
//! the real binary on a real file, on SQLite and PostgreSQL.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use enroll_core::Schedule;
use enroll_store::NewPractice;
use enroll_store::testing::{TestDb, on_each_engine, scalar, scalar_bound};
use jiff::Timestamp;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn import(db: &TestDb, file: &Path, extra: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
        .arg("--database-url")
        .arg(&db.url)
        .arg("import")
        .arg(file)
        .args(["--practice", "NORTH"])
        .args(extra)
        .env("ENROLL_LOG", "warn")
        .output()
        .await
        .expect("run enroll import");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn practice(db: &TestDb) {
    db.store
        .create_practice(
            &NewPractice {
                code: "NORTH".into(),
                name: "North Clinic".into(),
                schedule: Schedule::office_hours("America/Chicago"),
            },
            "test",
            Timestamp::now(),
        )
        .await
        .unwrap();
}

/// An export as a spreadsheet saves it: a byte-order mark, CRLF line
/// ends, headers in words, a quoted name with a comma, US dates.
const ROSTER: &[u8] =
    b"\xef\xbb\xbfMRN,First Name,Last Name,Date of Birth,Sex,ZIP Code,Email,Mobile Phone\r\n\
A-1,Ida,\"Wells, Jr\",07/04/1990,F,60616,ida@example.org,(312) 555-0100\r\n\
A-2,Bo,Li,1980-01-02,M,02139,bo@example.org,\r\n\
A-3,Cy,Kay,13/13/1990,F,02139,cy@example.org,\r\n\
,No,Mrn,1990-01-01,F,02139,no@example.org,\r\n\
A-4,Dee,Ng,19700505,female,10001,dee.example.org,\r\n\
A-5,Ann\xe9,Roe,1970-05-05,F,10001,ann@example.org,\r\n\
A-6,short\r\n\
A-7,Eve,Moss,1991-11-30,F,10002,eve@example.org,\"(617) 555-0101\"\r\n";

#[tokio::test]
async fn a_roster_loads_its_good_rows_names_each_bad_one_and_loads_nothing_twice() {
    on_each_engine(async |_, db: &TestDb| {
        practice(db).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roster.csv");
        std::fs::write(&file, ROSTER).unwrap();

        let first = import(db, &file, &[]).await;
        assert!(!first.ok, "rejected rows make the exit status fail");
        assert!(
            first.stdout.contains(
                "roster.csv: 8 rows for practice NORTH: 3 created, 0 updated, 0 unchanged, 5 rejected"
            ),
            "{}",
            first.stdout
        );
        for expected in [
            "line 4: date of birth is not a date",
            "line 5: the mrn is blank",
            "line 6: email address",
            "line 7: the row is not UTF-8 text",
            "line 8: the row has 2 fields where the header has 8",
            "fix them and import the file again",
        ] {
            assert!(first.stderr.contains(expected), "{expected}: {}", first.stderr);
        }
        for phi in ["Cy", "dee.example.org", "13/13/1990"] {
            assert!(!first.stderr.contains(phi), "{phi} in {}", first.stderr);
        }
        let ida = scalar_bound(
            &db.store,
            "SELECT COUNT(*) FROM patients WHERE mrn = 'A-1' AND last_name = $1 \
             AND date_of_birth = $2 AND cell_phone = $3",
            &["Wells, Jr", "1990-07-04", "+13125550100"],
        )
        .await
        .unwrap();
        assert_eq!(ida, 1, "the values are stored in the store's form");
        let eve = scalar_bound(
            &db.store,
            "SELECT COUNT(*) FROM patients WHERE mrn = 'A-7' AND cell_phone = $1",
            &["+16175550101"],
        )
        .await
        .unwrap();
        assert_eq!(eve, 1, "a quoted last cell before CRLF");

        let second = import(db, &file, &[]).await;
        assert!(
            second.stdout.contains("0 created, 0 updated, 3 unchanged, 5 rejected"),
            "{}",
            second.stdout
        );
        let patients = scalar(&db.store, "SELECT COUNT(*) FROM patients").await.unwrap();
        assert_eq!(patients, 3);
        let invites = scalar(&db.store, "SELECT COUNT(*) FROM invites").await.unwrap();
        assert_eq!(invites, 0, "importing sends nothing");

        // The fixed file: every row loads and the exit status is success.
        let fixed = dir.path().join("fixed.csv");
        std::fs::write(
            &fixed,
            "mrn,first_name,last_name,date_of_birth,birth_sex,zip,email,cell_phone\n\
             A-3,Cy,Kay,1990-12-13,F,02139,cy@example.org,\n\
             A-1,Ida,\"Wells, Jr\",1990-07-04,F,60617,ida@example.org,\n",
        )
        .unwrap();
        let third = import(db, &fixed, &[]).await;
        assert!(third.ok, "{} {}", third.stdout, third.stderr);
        assert!(
            third.stdout.contains("2 rows for practice NORTH: 1 created, 1 updated, 0 unchanged, 0 rejected"),
            "{}",
            third.stdout
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_and_missing_columns_are_named_and_map_says_what_they_hold() {
    on_each_engine(async |_, db: &TestDb| {
        practice(db).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.csv");
        std::fs::write(
            &file,
            "Patient Number,First,Last,DOB,Gender,Zip,Email,Insurance\n\
             9,Ida,Wells,1990-07-04,F,60616,ida@example.org,Acme\n",
        )
        .unwrap();
        let refused = import(db, &file, &[]).await;
        assert!(!refused.ok);
        for expected in [
            "\"Patient Number\", \"Gender\", \"Insurance\"",
            "--map \"HEADER=COLUMN\"",
            "no column for: mrn, birth_sex",
        ] {
            assert!(
                refused.stderr.contains(expected),
                "{expected}: {}",
                refused.stderr
            );
        }
        let patients = scalar(&db.store, "SELECT COUNT(*) FROM patients")
            .await
            .unwrap();
        assert_eq!(patients, 0, "a header refused loads nothing");

        let mapped = import(
            db,
            &file,
            &[
                "--map",
                "Patient Number=mrn",
                "--map",
                "gender=birth_sex",
                "--map",
                "Insurance=ignore",
            ],
        )
        .await;
        assert!(mapped.ok, "{} {}", mapped.stdout, mapped.stderr);
        assert!(mapped.stdout.contains("1 created"), "{}", mapped.stdout);

        let wrong = import(db, &file, &["--map", "Gender=gender"]).await;
        assert!(!wrong.ok);
        assert!(
            wrong.stderr.contains("the column must be one of"),
            "{}",
            wrong.stderr
        );

        let elsewhere = tokio::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
            .arg("--database-url")
            .arg(&db.url)
            .args(["import", "missing.csv", "--practice", "SOUTH"])
            .output()
            .await
            .unwrap();
        let words = String::from_utf8_lossy(&elsewhere.stderr);
        assert!(words.contains("no practice with code \"SOUTH\""), "{words}");
    })
    .await;
}
