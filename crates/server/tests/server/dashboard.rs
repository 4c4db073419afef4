//! The enrollment dashboard and the CMS measure over real HTTP, on both
//! engines, against a fixture whose right answers are worked out by hand
//! below; and the page in a real browser (axe-core, screenshots).
//!
//! The fixture (practice TEST, America/New_York, closed on Thanksgiving
//! Thursday 2026-11-26 and on Monday 2026-11-30; today is Thursday
//! 2026-12-10; the CMS period is November 2026):
//!
//! | patient | visit | what happened | measure |
//! | --- | --- | --- | --- |
//! | Ames | Fri 11-27 | invite delivered Fri 12-04 | numerator: the Monday holiday moves the deadline from Thu 12-03 to Fri 12-04 |
//! | Baker | Fri 11-27 | invite delivered Mon 12-07 | denominator only (a business day late) |
//! | Cole | Tue 11-10 | active since 10-15 (invited 10-01) | numerator: already active |
//! | Diaz | Thu 11-12 (no PV1-44: the day recorded) | invite failed | denominator only; a failed delivery |
//! | Ellis | Fri 10-30 | invite delivered 10-31 | outside the period |
//! | Ford | Fri 11-20 | invited 11-20, activated Tue 11-24 | numerator: activated by Fri 11-27 (Thu 11-26 closed) |
//! | Gray | none | no email | missing fields |
//! | Hill | none | opted out of texts | opted out (still eligible: email) |
//! | Irwin | none | latest invite held by the cap | held by the cap |
//! | Otto (practice OTHER) | Mon 11-16 | invite delivered Tue 11-17 | numerator, for an enterprise administrator only |
//!
//! TEST: 9 patients; eligible 6 (Ames, Baker, Diaz, Ellis, Hill, Irwin);
//! invited 5 (Ames, Baker, Cole, Ellis, Ford); activated 2; activation rate
//! 2 / 5 = 40.0%; median time to activation over Cole (14 days) and Ford
//! (4 days 3 hours): the lower middle, 4 days 3 hours. CMS: denominator 5
//! (Ames, Baker, Cole, Diaz, Ford), numerator 3 (Ames, Cole, Ford), 60.0%.
//! The whole enterprise adds Otto: 10 patients, 6 and 4, 66.7%.

use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, COOKIE};
use serde_json::json;

use crate::browser::{look_at, sign_in};
use crate::ui::Staff;
use crate::webdriver::{
    browser, click_when_there, full_page_screenshot, start_driver, text_of, tools_and_app_or_skip,
    wait_for,
};
use crate::{TestApp, on_each_engine};

fn ms(at: &str) -> i64 {
    at.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

async fn named(app: &TestApp, mrn: &str, first: &str, last: &str, extra: serde_json::Value) -> i64 {
    let mut body = json!({ "first_name": first, "last_name": last });
    if let (Some(b), serde_json::Value::Object(more)) = (body.as_object_mut(), extra) {
        b.extend(more);
    }
    app.patient(mrn, body).await
}

async fn invite(app: &TestApp, patient: i64, practice: i64, state: &str, sent: Option<&str>) {
    let sent = sent.map_or("NULL".to_string(), |s| ms(s).to_string());
    let created = ms("2026-09-01T12:00:00Z");
    let reason = if state == "failed" {
        "'the mailbox does not exist'"
    } else {
        "NULL"
    };
    app.db
        .execute(&format!(
            "INSERT INTO invites (patient_id, practice_id, kind, state, created_at, due_at, \
             counted_at, sent_at, attempts, failure_reason) VALUES \
             ({patient}, {practice}, 'manual', '{state}', {created}, {created}, {sent}, {sent}, 1, {reason})"
        ))
        .await
        .unwrap();
}

async fn visit(
    app: &TestApp,
    patient: i64,
    practice: i64,
    number: &str,
    admitted: Option<&str>,
    recorded: &str,
) {
    let admitted = admitted.map_or("NULL".to_string(), |a| format!("'{a}'"));
    app.db
        .execute(&format!(
            "INSERT INTO encounters (practice_id, patient_id, visit_number, admitted_at, created_at) \
             VALUES ({practice}, {patient}, '{number}', {admitted}, {})",
            ms(recorded)
        ))
        .await
        .unwrap();
}

async fn activated(app: &TestApp, patient: i64, at: &str) {
    app.db
        .execute(&format!(
            "UPDATE patients SET activated_at = {} WHERE id = {patient}",
            ms(at)
        ))
        .await
        .unwrap();
}

/// The fixture of the module's table; answers the other practice's id.
async fn fixture(app: &TestApp) -> i64 {
    let store = &app.db.store;
    let practice = store.practice(app.practice_id).await.unwrap().unwrap();
    let mut schedule = practice.schedule.schedule.clone();
    schedule.closed_dates = vec![
        jiff::civil::date(2026, 11, 26),
        jiff::civil::date(2026, 11, 30),
    ];
    store
        .set_schedule(practice.id, &schedule.validate().unwrap())
        .await
        .unwrap();
    let p = practice.id;
    let ames = named(app, "D-A", "Ann", "Ames", json!({})).await;
    let baker = named(app, "D-B", "Bo", "Baker", json!({})).await;
    let cole = named(app, "D-C", "Cy", "Cole", json!({})).await;
    let diaz = named(app, "D-D", "Di", "Diaz", json!({})).await;
    let ellis = named(app, "D-E", "Ed", "Ellis", json!({})).await;
    let ford = named(app, "D-F", "Flo", "Ford", json!({})).await;
    named(app, "D-G", "Gil", "Gray", json!({ "email": null })).await;
    let hill = named(app, "D-H", "Hal", "Hill", json!({})).await;
    let irwin = named(app, "D-I", "Ivy", "Irwin", json!({})).await;
    let otto = crate::ui::other_practice_patient(app).await;
    let other = store.practice_by_code("OTHER").await.unwrap().unwrap().id;
    // The invites the new charts triggered are replaced by the fixture's.
    app.db.execute("DELETE FROM invites").await.unwrap();

    invite(app, ames, p, "sent", Some("2026-12-04T20:00:00Z")).await;
    visit(
        app,
        ames,
        p,
        "V-A",
        Some("20261127093000"),
        "2026-11-27T14:31:00Z",
    )
    .await;
    invite(app, baker, p, "sent", Some("2026-12-07T15:00:00Z")).await;
    visit(
        app,
        baker,
        p,
        "V-B",
        Some("20261127"),
        "2026-11-27T15:00:00Z",
    )
    .await;
    invite(app, cole, p, "sent", Some("2026-10-01T14:00:00Z")).await;
    activated(app, cole, "2026-10-15T14:00:00Z").await;
    visit(
        app,
        cole,
        p,
        "V-C",
        Some("20261110110000"),
        "2026-11-10T16:00:00Z",
    )
    .await;
    invite(app, diaz, p, "failed", None).await;
    visit(app, diaz, p, "V-D", None, "2026-11-12T19:00:00Z").await;
    invite(app, ellis, p, "sent", Some("2026-10-31T14:00:00Z")).await;
    visit(
        app,
        ellis,
        p,
        "V-E",
        Some("20261030"),
        "2026-10-30T14:00:00Z",
    )
    .await;
    invite(app, ford, p, "sent", Some("2026-11-20T15:00:00Z")).await;
    activated(app, ford, "2026-11-24T18:00:00Z").await;
    visit(
        app,
        ford,
        p,
        "V-F",
        Some("20261120"),
        "2026-11-20T14:00:00Z",
    )
    .await;
    app.db
        .execute(&format!(
            "UPDATE patients SET sms_opted_out = TRUE WHERE id = {hill}"
        ))
        .await
        .unwrap();
    invite(app, irwin, p, "suppressed", None).await;
    invite(app, otto, other, "sent", Some("2026-11-17T15:00:00Z")).await;
    visit(
        app,
        otto,
        other,
        "V-O",
        Some("20261116"),
        "2026-11-16T15:00:00Z",
    )
    .await;
    app.clock.set("2026-12-10T17:00:00Z".parse().unwrap());
    other
}

/// The figure of one tile on the page.
fn tile(page: &str, label: &str) -> String {
    let at = page
        .find(&format!("<span class=\"tile-label\">{label}</span>"))
        .unwrap_or_else(|| panic!("no tile {label}: {page}"));
    let rest = &page[at..];
    let start =
        rest.find("<span class=\"tile-value\">").unwrap() + "<span class=\"tile-value\">".len();
    let end = rest[start..].find("</span>").unwrap();
    let value = &rest[start..start + end];
    // A linked figure: the link's text.
    match value.find('>') {
        Some(open) if value.starts_with("<a") => {
            value[open + 1..].trim_end_matches("</a>").to_string()
        }
        _ => value.to_string(),
    }
}

fn by_id(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {id}: {page}"))
        + marker.len();
    let end = page[start..].find('<').unwrap();
    page[start..start + end].to_string()
}

const NOVEMBER: &str = "from=2026-11-01&to=2026-11-30";

#[tokio::test]
async fn the_dashboard_and_the_cms_measure_match_the_hand_worked_fixture() {
    on_each_engine(async |app| {
        fixture(app).await;
        let frida = Staff::sign_in(app, "frida").await;
        let (status, page) = frida.get(&format!("/dashboard?{NOVEMBER}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for (label, value) in [
            ("Patients", "9"),
            ("Eligible", "6"),
            ("Invited", "5"),
            ("Activated", "2"),
            ("Missing fields", "1"),
            ("Held by the cap", "1"),
            ("Opted out", "1"),
            ("Failed deliveries", "1"),
            ("Activation rate", "40.0%"),
            ("Median time to activate", "4 days 3 hours"),
        ] {
            assert_eq!(tile(&page, label), value, "{label} on {:?}", app.engine);
        }
        assert_eq!(by_id(&page, "cms-denominator"), "5");
        assert_eq!(by_id(&page, "cms-numerator"), "3");
        assert_eq!(by_id(&page, "cms-rate"), "60.0%");
        assert!(!page.contains("can still grow"), "November's windows have all ended: {page}");
        // The charts: every day of the last 90, the numbers in the table too.
        assert!(page.contains("5 invites sent from 2026-09-12 to 2026-12-10"), "{page}");
        assert!(page.contains("2 activations from 2026-09-12 to 2026-12-10"), "{page}");
        assert!(page.contains("<th scope=\"row\">Fri Dec 4, 2026</th><td>1</td><td>0</td>"), "{page}");
        assert!(page.contains("<th scope=\"row\">Tue Nov 24, 2026</th><td>0</td><td>1</td>"), "{page}");
        assert_eq!(page.matches("<rect class=\"bar\"").count(), 180);
        assert!(page.contains("<title>Dec 7: 1 invites sent</title>"), "{page}");
        assert!(page.contains("href=\"/dashboard\">Dashboard</a>"), "the header links it");

        let (status, csv) = frida
            .get(&format!("/dashboard/cms.csv?{NOVEMBER}&set=numerator"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            csv,
            "Patient,MRN,Date of birth,Practice,Visit,Access deadline,Access given\n\
             \"Ames, Ann\",D-A,1990-07-04,Practice TEST,2026-11-27,2026-12-04,invite delivered on 2026-12-04\n\
             \"Cole, Cy\",D-C,1990-07-04,Practice TEST,2026-11-10,2026-11-16,already active (since 2026-10-15)\n\
             \"Ford, Flo\",D-F,1990-07-04,Practice TEST,2026-11-20,2026-11-27,activated on 2026-11-24\n"
        );
        let (_, csv) = frida
            .get(&format!("/dashboard/cms.csv?{NOVEMBER}&set=denominator"))
            .await;
        let names: Vec<&str> = csv.lines().skip(1).map(|l| l.split("\",").next().unwrap()).collect();
        assert_eq!(names, ["\"Ames, Ann", "\"Baker, Bo", "\"Cole, Cy", "\"Diaz, Di", "\"Ford, Flo"]);
        assert!(csv.contains("\"Baker, Bo\",D-B,1990-07-04,Practice TEST,2026-11-27,2026-12-04,not given by the deadline"), "{csv}");
        assert!(csv.contains("\"Diaz, Di\",D-D,1990-07-04,Practice TEST,2026-11-12,2026-11-18,not given by the deadline"), "{csv}");
        let response = app
            .http
            .get(app.url(&format!("/dashboard/cms.csv?{NOVEMBER}&set=numerator")))
            .header(COOKIE, frida.cookie())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()[CONTENT_DISPOSITION],
            "attachment; filename=\"enroll-cms-numerator-2026-11-01-2026-11-30.csv\""
        );

        // Audited: the view with its period, the export with the ids.
        let log = app.db.store.audit_log(None, 50).await.unwrap();
        let view = log.iter().find(|e| e.action == "dashboard.view").expect("the view's audit line");
        assert!(view.detail.as_deref().unwrap().contains("\"from\":\"2026-11-01\""), "{view:?}");
        let export = log.iter().find(|e| e.action == "dashboard.export").expect("the export's audit line");
        let detail: serde_json::Value = serde_json::from_str(export.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail["ids"].as_str().unwrap().split(',').count(), 3, "{detail}");

        // The front desk's scope: another practice is not theirs.
        let (status, _) = frida.get(&format!("/dashboard?practice=OTHER&{NOVEMBER}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, page) = frida.get("/dashboard?from=2026-12-01&to=2026-11-01").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("must start on or before"), "{page}");
        let (status, _) = frida.get(&format!("/dashboard/cms.csv?{NOVEMBER}&set=other")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn an_enterprise_administrator_sees_every_practice_or_one() {
    on_each_engine(async |app| {
        fixture(app).await;
        let ada = Staff::sign_in(app, "ada").await;
        let (status, page) = ada.get(&format!("/dashboard?{NOVEMBER}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(tile(&page, "Patients"), "10");
        assert_eq!(tile(&page, "Invited"), "6");
        assert_eq!(by_id(&page, "cms-denominator"), "6");
        assert_eq!(by_id(&page, "cms-numerator"), "4");
        assert_eq!(by_id(&page, "cms-rate"), "66.7%");
        let (_, page) = ada
            .get(&format!("/dashboard?practice=OTHER&{NOVEMBER}"))
            .await;
        assert_eq!(tile(&page, "Patients"), "1");
        assert_eq!(by_id(&page, "cms-numerator"), "1");
        assert!(page.contains("<option value=\"OTHER\" selected>"), "{page}");
        let (_, page) = ada
            .get(&format!("/dashboard?practice=TEST&{NOVEMBER}"))
            .await;
        assert_eq!(by_id(&page, "cms-numerator"), "3");
        // The default period is the 90 days ending today, still open.
        let (_, page) = ada.get("/dashboard").await;
        assert!(page.contains("value=\"2026-09-12\""), "{page}");
        assert!(page.contains("can still grow"), "{page}");
    })
    .await;
}

/// The rollups of migration 0016 against counting afresh: the counts for
/// the enterprise, each practice and both, and the measure for November
/// and for the 90 days ending today, of each practice.
async fn rollups_agree(app: &TestApp, other: i64, step: &str) {
    use enroll_server::Clock as _;
    let store = &app.db.store;
    let now = app.clock.now();
    let p = app.practice_id;
    for scope in [None, Some(vec![p]), Some(vec![other]), Some(vec![p, other])] {
        let rolled = store.dashboard_counts(scope.as_deref(), now).await.unwrap();
        let counted = store
            .recount_dashboard(scope.as_deref(), now)
            .await
            .unwrap();
        assert_eq!(
            rolled, counted,
            "{step}: practices {scope:?} on {:?}",
            app.engine
        );
        // New York's days hold the end of DST; Kolkata's (+05:30) none.
        for zone in ["America/New_York", "Asia/Kolkata"] {
            let tz = jiff::tz::TimeZone::get(zone).unwrap();
            let charted = store
                .dashboard_days(scope.as_deref(), &tz, now)
                .await
                .unwrap();
            let recharted = store
                .recount_dashboard_days(scope.as_deref(), &tz, now)
                .await
                .unwrap();
            assert_eq!(
                charted, recharted,
                "{step}: the charts of {scope:?} in {zone} on {:?}",
                app.engine
            );
            assert!(
                charted.iter().any(|d| d.invites_sent > 0),
                "{step}: the charts have something to compare"
            );
        }
    }
    let periods = [
        (
            jiff::civil::date(2026, 11, 1),
            jiff::civil::date(2026, 11, 30),
        ),
        (
            jiff::civil::date(2026, 9, 12),
            jiff::civil::date(2026, 12, 10),
        ),
    ];
    for (from, to) in periods {
        for id in [p, other] {
            let practice = store.practice(id).await.unwrap().unwrap();
            let live = store.cms_measure(&practice, from, to).await.unwrap();
            let count = |f: fn(&enroll_core::MeasureOutcome) -> bool| {
                live.iter().filter(|m| f(&m.outcome)).count() as i64
            };
            let expected = enroll_store::MeasureCounts {
                denominator: count(enroll_core::MeasureOutcome::in_denominator),
                numerator: count(enroll_core::MeasureOutcome::in_numerator),
            };
            let rolled = store.measure_counts(&[id], from, to).await.unwrap();
            assert_eq!(
                rolled, expected,
                "{step}: practice {id}, {from} to {to} on {:?}",
                app.engine
            );
        }
    }
}

async fn sql(app: &TestApp, statement: &str) {
    app.db.execute(statement).await.unwrap();
}

/// Every kind of change the rollups follow, each checked against a
/// recount: a delivered invite that bounces, folding the change rows,
/// Enroll Now delivered through the dispatcher, an activation, an HL7
/// merge, a field filled in, an opt-out, the closed dates changed, a new
/// visit, an invite removed.
#[tokio::test]
async fn the_rollups_agree_with_a_recount_through_every_kind_of_change() {
    for engine in crate::ENGINES {
        // The demo mailbox as the channel, so the dispatcher delivers.
        if let Some((app, _mailbox)) = TestApp::start_with_mailbox(engine).await {
            rollups_follow_every_kind_of_change(&app).await;
            app.stop().await;
        }
    }
}

async fn rollups_follow_every_kind_of_change(app: &TestApp) {
    {
        let other = fixture(app).await;
        rollups_agree(app, other, "the fixture").await;
        let id = |mrn: &'static str| async move {
            let sql = format!("SELECT id FROM patients WHERE mrn = '{mrn}'");
            enroll_store::testing::scalar(&app.db.store, &sql)
                .await
                .unwrap()
        };
        let (ames, diaz, hill, irwin) = (
            id("D-A").await,
            id("D-D").await,
            id("D-H").await,
            id("D-I").await,
        );

        sql(app, &format!("UPDATE invites SET state = 'failed', failure_reason = 'bounced' WHERE patient_id = {ames}")).await;
        rollups_agree(app, other, "a delivered invite bounced").await;
        app.db.store.fold_dashboard_changes().await.unwrap();
        rollups_agree(app, other, "the changes folded").await;

        let (status, body) = app.enroll(hill).await;
        assert!(status.is_success(), "{body}");
        rollups_agree(app, other, "Enroll Now queued").await;
        app.deliver().await;
        assert_eq!(app.invites(hill).await.last().unwrap()["state"], "sent");
        rollups_agree(app, other, "Enroll Now delivered").await;

        activated(app, diaz, "2026-11-13T12:00:00Z").await;
        rollups_agree(app, other, "an activation").await;

        let mut sender = crate::mllp::Sender::connect(app.mllp_addr).await;
        let ack = sender
            .send(
                [
                "MSH|^~\\&|EPIC|TEST|ENROLL|PORTAL|20261210100000||ADT^A40^ADT_A39|ROLLUP-1|P|2.5.1",
                "EVN|A40|20261210100000",
                "PID|1||D-A^^^TEST^MR||Ames^Ann||19900704|F|||1 Main St^^New York^NY^10027||^NET^Internet^ann@example.org",
                "MRG|D-B^^^TEST^MR",
                ]
                .join("\r")
                .as_bytes(),
            )
            .await;
        assert!(ack.contains("MSA|AA"), "{ack}");
        rollups_agree(app, other, "Baker merged into Ames").await;

        sql(
            app,
            // Gil's address, made from the chart (its value stays out of the log).
            "UPDATE patients SET email = lower(first_name) || '@example.org' WHERE mrn = 'D-G'",
        )
        .await;
        sql(
            app,
            &format!("UPDATE patients SET email_opted_out = TRUE WHERE id = {hill}"),
        )
        .await;
        rollups_agree(app, other, "a field filled in and an opt-out").await;

        let practice = app.practice().await;
        let mut schedule = practice.schedule.schedule.clone();
        schedule.closed_dates = vec![jiff::civil::date(2026, 11, 26)];
        app.db
            .store
            .set_schedule(practice.id, &schedule.validate().unwrap())
            .await
            .unwrap();
        rollups_agree(app, other, "a closed date reopened").await;

        visit(
            app,
            hill,
            app.practice_id,
            "V-H",
            Some("20261208"),
            "2026-12-08T15:00:00Z",
        )
        .await;
        rollups_agree(app, other, "a new visit").await;
        sql(
            app,
            &format!("DELETE FROM invites WHERE patient_id = {irwin}"),
        )
        .await;
        rollups_agree(app, other, "an invite removed").await;
        // 23:30 on Nov 19 in New York, after the clocks went back: with the
        // summer offset the chart would put it on Nov 20.
        invite(
            app,
            hill,
            app.practice_id,
            "sent",
            Some("2026-11-20T04:30:00Z"),
        )
        .await;
        let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let now = enroll_server::Clock::now(app.clock.as_ref());
        let days = app.db.store.dashboard_days(None, &tz, now).await.unwrap();
        let on = |d: jiff::civil::Date| days.iter().find(|x| x.date == d).unwrap().invites_sent;
        assert_eq!(on(jiff::civil::date(2026, 11, 19)), 1, "{days:?}");
        rollups_agree(app, other, "a delivery late in the evening after DST ended").await;
    }
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser_is_axe_clean_at_desktop_and_phone_width() {
    let Some((tools, app)) = tools_and_app_or_skip().await else {
        return;
    };
    fixture(&app).await;
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;
    sign_in(&client, &app, "frida").await;
    click_when_there(&client, Locator::Css("nav a[href='/dashboard']")).await;
    wait_for(&client, Locator::Id("cms-h")).await;
    // The period chosen with the form, as a user would.
    client
        .execute(
            "document.getElementById('from').value = '2026-11-01'; \
             document.getElementById('to').value = '2026-11-30';",
            vec![],
        )
        .await
        .unwrap();
    client
        .find(Locator::Css("form.period button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&client, Locator::Id("cms-rate")).await;
    assert_eq!(text_of(&client, "#cms-rate").await, "60.0%");
    look_at(&client, &tools, "dashboard").await;
    full_page_screenshot(&client, "staff-dashboard-full", (1366, 768)).await;
    full_page_screenshot(&client, "staff-dashboard-phone", (390, 844)).await;
    client.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
