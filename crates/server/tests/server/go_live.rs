//! "Invite existing patients" (go-live) over real HTTP with a running
//! dispatcher round by round and a real SMTP server, on both engines: the
//! counts before, the form's errors next to their fields, the throttle,
//! pause, resume and cancel, the summary, the audit, and that running it
//! twice invites no one twice. (The rules: `store::a_go_live_run_*`.)

use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::integration_tool::audited;
use crate::ui::Staff;
use crate::{TestApp, TestSmtp, on_each_engine};

fn go_live_path(app: &TestApp) -> String {
    format!("/admin/practices/{}/go-live", app.practice_id)
}

async fn progress(staff: &Staff<'_>, app: &TestApp) -> Value {
    let (status, body) = staff.get(&format!("{}/progress", go_live_path(app))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["run"].clone()
}

/// The test practice with auto invites off (the charts were there before
/// go-live) and `n` complete charts with their own addresses, plus one
/// without an email.
async fn practice_before_go_live(app: &TestApp, n: usize) -> Vec<i64> {
    app.db
        .store
        .set_auto_invites(app.practice_id, false, None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let email = format!("patient{i}@example.org");
        ids.push(
            app.patient(&format!("GL-{i}"), json!({ "email": email }))
                .await,
        );
    }
    app.patient("GL-NOEMAIL", json!({ "email": null })).await;
    ids
}

#[tokio::test]
async fn invite_existing_patients_goes_at_its_rate_pauses_resumes_and_invites_no_one_twice() {
    on_each_engine(async |app| {
        let ids = practice_before_go_live(app, 3).await;
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let path = go_live_path(app);

        let frida = Staff::sign_in(app, "frida").await;
        let (status, _) = frida.get(&path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "front desk may not start a run");

        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let (status, page) = ada.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("<strong id=\"candidates\">3</strong> patients can be invited now"), "{page}");
        assert!(page.contains("1 missing the email address"), "{page}");

        // A rate that is no number, and no confirmation: both said next to
        // their fields, and nothing starts.
        let (status, page) = ada
            .post(&path, &[("csrf", &csrf), ("rate_per_hour", "fast")])
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-rate\""), "{page}");
        assert!(page.contains("not a whole number of invites an hour"), "{page}");
        assert!(page.contains("id=\"err-confirmed\""), "{page}");
        assert!(progress(&ada, app).await.is_null(), "no run was started");

        let start = [("csrf", csrf.as_str()), ("rate_per_hour", "60"), ("confirmed", "yes")];
        let (status, location) = ada.post(&path, &start).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let started = audited(app, "practice.go_live_started").await;
        assert_eq!(started[0]["after"]["patients"], 3, "{started:?}");
        assert_eq!(started[0]["after"]["rate_per_hour"], 60, "{started:?}");
        let run = progress(&ada, app).await;
        assert_eq!((run["state"].as_str(), run["waiting"].as_i64()), (Some("running"), Some(3)), "{run}");
        let (_, page) = ada.get(&location).await;
        assert!(page.contains("3 patients will be invited, 60 an hour"), "{page}");
        assert!(page.contains("id=\"go-live-pause\""), "{page}");

        // 60 an hour: one now, the next a minute later.
        dispatcher.run_round().await.unwrap();
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 1, "{:?}: one at once", app.engine);
        app.clock.advance(SignedDuration::from_mins(1));
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 2, "{:?}", app.engine);
        let run = progress(&ada, app).await;
        assert_eq!((run["sent"].as_i64(), run["waiting"].as_i64()), (Some(2), Some(1)), "{run}");

        // Paused: nothing more goes out, however long it waits.
        let run_path = format!("{path}/{}", run["id"]);
        let (status, _) = ada.post(&run_path, &[("csrf", &csrf), ("action", "pause")]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        app.clock.advance(SignedDuration::from_mins(10));
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 2, "{:?}: paused", app.engine);
        let (_, page) = ada.get(&path).await;
        assert!(page.contains("Paused") && page.contains("id=\"go-live-resume\""), "{page}");

        let (status, _) = ada.post(&run_path, &[("csrf", &csrf), ("action", "resume")]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 3, "{:?}: resumed", app.engine);
        let mut to: Vec<String> = smtp.received().iter().flat_map(|m| m.to.clone()).collect();
        to.sort();
        assert_eq!(to, ["patient0@example.org", "patient1@example.org", "patient2@example.org"]);

        let run = progress(&ada, app).await;
        assert_eq!(run["state"], "finished", "{run}");
        let (_, page) = ada.get(&path).await;
        assert!(page.contains("<strong>Summary:</strong> 3 sent, 0 held back by the cap, 0 failed, 0 skipped, of 3."), "{page}");
        assert!(page.contains("No patient can be invited now"), "{page}");
        assert_eq!(audited(app, "practice.go_live_pause").await[0]["after"]["state"], "paused");
        assert_eq!(audited(app, "practice.go_live_resume").await[0]["after"]["state"], "running");

        // Twice: refused in words, and no fourth email.
        let (status, page) = ada.post(&path, &start).await;
        assert_eq!(status, StatusCode::CONFLICT, "{page}");
        assert!(page.contains("id=\"err-start\""), "{page}");
        app.clock.advance(SignedDuration::from_mins(10));
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 3, "{:?}", app.engine);
        // Each chart's own history says what happened.
        let timeline = app.timeline_kinds(ids[0]).await;
        assert!(timeline.contains(&"go_live_invite".to_string()), "{timeline:?}");
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_run_invites_no_one_else_and_says_so() {
    on_each_engine(async |app| {
        practice_before_go_live(app, 4).await;
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let path = go_live_path(app);
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let start = [
            ("csrf", csrf.as_str()),
            ("rate_per_hour", "60"),
            ("confirmed", "yes"),
        ];
        let (status, _) = ada.post(&path, &start).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        dispatcher.run_round().await.unwrap();
        let run = progress(&ada, app).await;
        let run_path = format!("{path}/{}", run["id"]);
        let (status, _) = ada
            .post(&run_path, &[("csrf", &csrf), ("action", "cancel")])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        app.clock.advance(SignedDuration::from_mins(10));
        dispatcher.run_round().await.unwrap();
        assert_eq!(smtp.received().len(), 1, "{:?}", app.engine);
        let run = progress(&ada, app).await;
        assert_eq!(
            (run["state"].as_str(), run["cancelled"].as_i64()),
            (Some("cancelled"), Some(3)),
            "{run}"
        );
        let (_, page) = ada.get(&path).await;
        assert!(page.contains("3 not invited (cancelled)"), "{page}");
        // Cancelling twice is refused in words; a made-up run is not found.
        let (status, page) = ada
            .post(&run_path, &[("csrf", &csrf), ("action", "cancel")])
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{page}");
        assert!(page.contains("already cancelled"), "{page}");
        let (status, _) = ada
            .post(
                &format!("{path}/999999"),
                &[("csrf", &csrf), ("action", "cancel")],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Without the session's CSRF value nothing changes.
        let (status, _) = ada
            .post(
                &path,
                &[
                    ("csrf", "forged"),
                    ("rate_per_hour", "60"),
                    ("confirmed", "yes"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The three never invited can be invited by a new run.
        let (_, page) = ada.get(&path).await;
        assert!(
            page.contains("<strong id=\"candidates\">3</strong>"),
            "{page}"
        );
    })
    .await;
}
