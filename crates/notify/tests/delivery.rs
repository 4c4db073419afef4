//! enroll-notify end to end: templates, SMTP against a real (tiny) SMTP server
//! over loopback TCP, SMS against an HTTP stand-in on loopback.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enroll_notify::testing::SmtpSink;
use enroll_notify::{
    DeliveryError, E164Phone, EmailAddress, EmailSender, HttpSmsSender, InviteContext, Language,
    OutgoingEmail, OutgoingSms, SmsConfig, SmsSender, SmtpConfig, SmtpMailer, SmtpSecurity,
    TemplateError, TemplateKind, Templates,
};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- templates

/// A chart row with much more than an invite may show (R12).
struct PatientRecord {
    first_name: &'static str,
    last_name: &'static str,
    dob: &'static str,
    zip: &'static str,
    mrn: &'static str,
    specialty: &'static str,
    language: Option<&'static str>,
}

const PATIENT: PatientRecord = PatientRecord {
    first_name: "Maria",
    last_name: "Delacroix-Whitfield",
    dob: "1984-03-09",
    zip: "02134",
    mrn: "MRN-77",
    specialty: "Oncology",
    language: Some("es-MX"),
};

fn context_for(patient: &PatientRecord, practice_name: &str) -> InviteContext {
    InviteContext {
        first_name: patient.first_name.to_owned(),
        practice_name: practice_name.to_owned(),
        activation_url: "https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc".to_owned(),
        unsubscribe_url: "https://portal.example.org/unsubscribe/42/9f86d081884c7d65".to_owned(),
        language: Language::from_preference(patient.language),
    }
}

fn ctx(language: Language) -> InviteContext {
    InviteContext {
        language,
        ..context_for(&PATIENT, "Main Street Clinic")
    }
}

#[test]
fn english_email_and_sms() {
    let templates = Templates::builtin();
    let c = ctx(Language::English);
    let email = templates.render_email("main-st", &c).unwrap();
    assert_eq!(
        email.subject,
        "Your invitation to the Main Street Clinic patient portal"
    );
    assert!(email.text.starts_with("Hi Maria,\n"), "{}", email.text);
    assert!(
        email
            .text
            .contains("Main Street Clinic invites you to join its patient portal.")
    );
    assert!(
        email
            .text
            .contains("\nhttps://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc\n")
    );
    assert!(
        email
            .text
            .contains("Unsubscribe: https://portal.example.org/unsubscribe/42/9f86d081884c7d65")
    );
    assert!(email.html.contains("<html lang=\"en\">"));
    assert!(
        email
            .html
            .contains("<p style=\"font-size:16px;line-height:1.5;\">Hi Maria,</p>")
    );
    assert!(
        email
            .html
            .contains("<a href=\"https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc\"")
    );
    assert!(email.html.contains("Set up my account"));
    assert!(
        email
            .html
            .contains("<a href=\"https://portal.example.org/unsubscribe/42/9f86d081884c7d65\"")
    );

    let sms = templates.render_sms("main-st", &c).unwrap();
    assert_eq!(
        sms,
        "Main Street Clinic: Hi Maria, join our patient portal: \
         https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc Reply STOP to opt out"
    );
}

#[test]
fn spanish_email_and_sms() {
    let templates = Templates::builtin();
    let c = ctx(Language::Spanish);
    let email = templates.render_email("main-st", &c).unwrap();
    assert_eq!(
        email.subject,
        "Su invitación al portal de pacientes de Main Street Clinic"
    );
    assert!(email.text.starts_with("Hola, Maria:\n"), "{}", email.text);
    assert!(
        email
            .text
            .contains("Main Street Clinic le invita a unirse a su portal de pacientes.")
    );
    assert!(email.text.contains(
        "Cancele la suscripción: https://portal.example.org/unsubscribe/42/9f86d081884c7d65"
    ));
    assert!(email.html.contains("<html lang=\"es\">"));
    assert!(email.html.contains("Crear mi cuenta"));
    assert!(!email.html.contains("Set up my account"));

    let sms = templates.render_sms("main-st", &c).unwrap();
    assert_eq!(
        sms,
        "Main Street Clinic: Hola Maria, active su portal: \
         https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc Responda STOP para cancelar"
    );
}

#[test]
fn html_escapes_the_first_name() {
    let templates = Templates::builtin();
    let mut c = ctx(Language::English);
    c.first_name = "<script>alert(1)</script>".to_owned();
    c.practice_name = "Smith & Sons \"Family\" Care".to_owned();
    let email = templates.render_email("main-st", &c).unwrap();
    assert!(!email.html.contains("<script>"), "{}", email.html);
    assert!(
        email
            .html
            .contains("Hi &lt;script&gt;alert(1)&lt;/script&gt;,"),
        "{}",
        email.html
    );
    assert!(
        email
            .html
            .contains("Smith &amp; Sons &quot;Family&quot; Care")
    );
    // The text part and subject are not HTML: shown as typed.
    assert!(email.text.starts_with("Hi <script>alert(1)</script>,"));
    assert!(email.subject.contains("Smith & Sons \"Family\" Care"));
}

#[test]
fn override_applies_to_one_practice_only() {
    let templates = Templates::builtin()
        .with_override(
            "oak",
            Language::English,
            TemplateKind::EmailSubject,
            "{{ first_name }}, your {{ practice_name }} portal is ready",
        )
        .unwrap()
        .with_override(
            "oak",
            Language::English,
            TemplateKind::Sms,
            "{{ practice_name }}: {{ first_name }}, set up your portal: {{ activation_url }} Text STOP to opt out",
        )
        .unwrap();
    let mut oak = ctx(Language::English);
    oak.practice_name = "Oak Pediatrics".to_owned();

    let email = templates.render_email("oak", &oak).unwrap();
    assert_eq!(email.subject, "Maria, your Oak Pediatrics portal is ready");
    // Parts without an override stay built in.
    assert!(email.text.starts_with("Hi Maria,"));
    assert_eq!(
        templates.render_sms("oak", &oak).unwrap(),
        "Oak Pediatrics: Maria, set up your portal: \
         https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc Text STOP to opt out"
    );

    // Another practice, and the same practice in Spanish, keep the built-ins.
    let other = templates
        .render_email("main-st", &ctx(Language::English))
        .unwrap();
    assert_eq!(
        other.subject,
        "Your invitation to the Main Street Clinic patient portal"
    );
    let mut oak_es = oak.clone();
    oak_es.language = Language::Spanish;
    let spanish = templates.render_email("oak", &oak_es).unwrap();
    assert_eq!(
        spanish.subject,
        "Su invitación al portal de pacientes de Oak Pediatrics"
    );
}

#[test]
fn invalid_overrides_are_rejected_with_a_clear_error() {
    let add = |kind, source: &str| {
        Templates::builtin()
            .with_override("oak", Language::English, kind, source)
            .unwrap_err()
    };

    let syntax = add(TemplateKind::EmailSubject, "Hello {{ first_name ");
    assert!(matches!(
        &syntax,
        TemplateError::InvalidOverride { practice_code, language: "en", kind: TemplateKind::EmailSubject, .. }
            if practice_code == "oak"
    ));
    let message = syntax.to_string();
    assert!(
        message.contains("email subject template for practice oak is invalid"),
        "{message}"
    );
    assert!(message.contains("syntax error"), "{message}");

    // R12 guard: variables other than the four are undefined, and that is an error.
    let phi = add(
        TemplateKind::EmailSubject,
        "Hello {{ first_name }} {{ last_name }}",
    );
    assert!(
        phi.to_string()
            .contains("uses a name other than first_name"),
        "{phi}"
    );
    let phi = add(TemplateKind::EmailSubject, "Born {{ patient.dob }}");
    assert!(
        phi.to_string()
            .contains("uses a name other than first_name"),
        "{phi}"
    );

    let no_link = add(
        TemplateKind::EmailHtml,
        "<p>Hi {{ first_name }}</p> {{ unsubscribe_url }}",
    );
    assert!(no_link.to_string().contains("activation link"), "{no_link}");
    let no_unsubscribe = add(
        TemplateKind::EmailText,
        "Hi {{ first_name }}: {{ activation_url }}",
    );
    assert!(
        no_unsubscribe.to_string().contains("unsubscribe link"),
        "{no_unsubscribe}"
    );

    let no_stop = add(
        TemplateKind::Sms,
        "{{ practice_name }}: join us at {{ activation_url }}",
    );
    assert!(no_stop.to_string().contains("STOP"), "{no_stop}");
    let no_practice = add(
        TemplateKind::Sms,
        "Join us at {{ activation_url }} Reply STOP to opt out",
    );
    assert!(
        no_practice.to_string().contains("name the practice"),
        "{no_practice}"
    );
    let too_long = add(
        TemplateKind::Sms,
        "{{ practice_name }}: Dear {{ first_name }}, we warmly invite you to join our brand new patient portal today: {{ activation_url }} Reply STOP to opt out",
    );
    assert!(
        too_long.to_string().contains("characters long"),
        "{too_long}"
    );
    let empty = add(TemplateKind::EmailSubject, "{# nothing #}  ");
    assert!(empty.to_string().contains("renders to nothing"), "{empty}");

    let bad_code = Templates::builtin()
        .with_override("../oak", Language::English, TemplateKind::Sms, "x")
        .unwrap_err();
    assert_eq!(
        bad_code,
        TemplateError::InvalidPracticeCode("../oak".to_owned())
    );
}

#[test]
fn no_phi_beyond_first_name_and_practice_in_any_output() {
    let templates = Templates::builtin()
        .with_override(
            "oak",
            Language::Spanish,
            TemplateKind::EmailText,
            "{{ first_name }}: {{ activation_url }} / {{ unsubscribe_url }}",
        )
        .unwrap();
    let forbidden = [
        PATIENT.last_name,
        PATIENT.dob,
        "03/09/1984",
        "1984",
        PATIENT.zip,
        PATIENT.mrn,
        "MRN",
        PATIENT.specialty,
    ];
    for practice_code in ["main-st", "oak"] {
        for language in [Language::English, Language::Spanish] {
            let mut c = context_for(&PATIENT, "Main Street Clinic");
            c.language = language;
            let email = templates.render_email(practice_code, &c).unwrap();
            let sms = templates.render_sms(practice_code, &c).unwrap();
            for (part, text) in [
                ("subject", &email.subject),
                ("text", &email.text),
                ("html", &email.html),
                ("sms", &sms),
            ] {
                for phi in forbidden {
                    assert!(
                        !text.contains(phi),
                        "{practice_code} {language:?} {part} contains {phi:?}"
                    );
                }
            }
            assert!(email.text.contains(PATIENT.first_name));
            assert!(sms.contains(PATIENT.first_name));
        }
    }
}

#[test]
fn sms_length_limit() {
    let templates = Templates::builtin();
    // A 30-character practice name, a 60-character link, a longish first name.
    let practice = "Riverside Family Medicine Asso";
    let url = "https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc1";
    assert_eq!((practice.len(), url.len()), (30, 60));
    for language in [Language::English, Language::Spanish] {
        let c = InviteContext {
            first_name: "Alejandra".to_owned(),
            practice_name: practice.to_owned(),
            activation_url: url.to_owned(),
            unsubscribe_url: "https://portal.example.org/unsubscribe/1/ab".to_owned(),
            language,
        };
        let sms = templates.render_sms("main-st", &c).unwrap();
        assert!(sms.chars().count() <= 160, "{language:?}: {sms}");
    }

    // A 35-character practice name and an 80-character link do not fit: an
    // error, never a truncated text.
    let practice = "Riverside Family Medicine Associate";
    let url = "https://patient-portal.riverside-family.example.org/activate/Zq3vX9kLm2Pw7RtY8uB";
    assert_eq!((practice.len(), url.len()), (35, 80));
    for language in [Language::English, Language::Spanish] {
        let c = InviteContext {
            first_name: "Alejandra".to_owned(),
            practice_name: practice.to_owned(),
            activation_url: url.to_owned(),
            unsubscribe_url: "https://portal.example.org/unsubscribe/1/ab".to_owned(),
            language,
        };
        let err = templates.render_sms("main-st", &c).unwrap_err();
        let TemplateError::SmsTooLong { len } = err else {
            panic!("{language:?}: expected SmsTooLong, got {err}");
        };
        assert!(len > 160);
    }
}

// ---------------------------------------------------------------- SMTP

/// The shared SMTP sink (`enroll_notify::testing`, feature `testing`) with
/// the faults these tests use: 550 for "reject-me", 451 for "busy", no
/// answer at all for "stall".
async fn start_smtp_stub() -> SmtpSink {
    let sink = SmtpSink::start().await;
    let address = |local: &str| format!("{local}@patients.example");
    lock(&sink.state.reject).insert(address("reject-me"));
    lock(&sink.state.defer).insert(address("busy"));
    lock(&sink.state.stall).insert(address("stall"));
    sink
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

fn smtp_config(addr: SocketAddr) -> SmtpConfig {
    SmtpConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        security: SmtpSecurity::Plain,
        username: None,
        password: None,
        pool_size: 2,
        timeout_secs: 5,
    }
}

fn invite_email(to: &str) -> OutgoingEmail {
    let content = Templates::builtin()
        .render_email("main-st", &ctx(Language::English))
        .unwrap();
    OutgoingEmail {
        to: EmailAddress::parse(to).unwrap(),
        from: "Main Street Clinic <invites@clinic.example>".to_owned(),
        message_id: "invite-42@enroll.example".to_owned(),
        list_unsubscribe: "https://portal.example.org/unsubscribe/42/9f86d081884c7d65".to_owned(),
        content,
    }
}

/// Undoes quoted-printable soft line breaks so phrases can be searched.
fn unfold_qp(data: &str) -> String {
    data.replace("=\r\n", "")
}

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn smtp_delivers_a_complete_message() {
    let stub = start_smtp_stub().await;
    let mailer = SmtpMailer::new(&smtp_config(stub.addr)).unwrap();
    mailer.check().await.unwrap();

    let email = invite_email("maria.delacroix@patients.example");
    mailer.send_email(&email).await.unwrap();
    // A re-send (say after a crash) carries the same Message-ID.
    mailer.send_email(&email).await.unwrap();

    let received = stub.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first.mail_from, "invites@clinic.example");
    assert_eq!(
        first.to,
        vec!["maria.delacroix@patients.example".to_owned()]
    );
    let data = unfold_qp(&first.data);
    assert!(
        data.contains("To: maria.delacroix@patients.example\r\n"),
        "{data}"
    );
    assert!(
        data.contains("From: \"Main Street Clinic\" <invites@clinic.example>\r\n"),
        "{data}"
    );
    assert!(
        data.contains("Message-ID: <invite-42@enroll.example>\r\n"),
        "{data}"
    );
    assert!(data.contains(
        "List-Unsubscribe: <https://portal.example.org/unsubscribe/42/9f86d081884c7d65>\r\n"
    ));
    assert!(data.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert!(data.contains("Subject: Your invitation to the Main Street Clinic patient portal\r\n"));
    assert!(data.contains("Content-Type: multipart/alternative;"));
    assert!(data.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(data.contains("Content-Type: text/html; charset=utf-8"));
    assert!(data.contains("Hi Maria,"));
    assert!(data.contains("Set up my account"));
    assert!(data.contains("https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc"));
    let second = unfold_qp(&received[1].data);
    assert!(second.contains("Message-ID: <invite-42@enroll.example>\r\n"));
}

#[tokio::test]
async fn smtp_logs_in_when_configured() {
    let stub = start_smtp_stub().await;
    stub.state.require_login("enroll", "right-password");
    let mut config = smtp_config(stub.addr);
    config.username = Some("enroll".to_owned());
    config.password = Some("right-password".into());
    let mailer = SmtpMailer::new(&config).unwrap();
    mailer
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap();
    assert_eq!(stub.count(), 1);

    config.password = Some("wrong-password".into());
    let mailer = SmtpMailer::new(&config).unwrap();
    let err = mailer
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(err.to_string().contains("username and password"), "{err}");
    assert_eq!(stub.count(), 1);
}

#[tokio::test]
async fn smtp_550_is_permanent_451_is_transient() {
    let stub = start_smtp_stub().await;
    let mailer = SmtpMailer::new(&smtp_config(stub.addr)).unwrap();

    let err = mailer
        .send_email(&invite_email("reject-me@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent(_)), "{err}");
    assert!(err.to_string().contains("550"), "{err}");
    // The server quoted the address; our message must not.
    assert!(!err.to_string().contains("reject-me"), "{err}");
    assert!(!err.to_string().contains("patients.example"), "{err}");

    let err = mailer
        .send_email(&invite_email("busy@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(err.to_string().contains("451"), "{err}");
    assert!(!err.to_string().contains("patients.example"), "{err}");

    // The pool still works after the refusals.
    mailer
        .send_email(&invite_email("ok@patients.example"))
        .await
        .unwrap();
    let received = stub.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, vec!["ok@patients.example".to_owned()]);
}

#[tokio::test]
async fn smtp_malformed_addresses_are_permanent() {
    let stub = start_smtp_stub().await;
    let mailer = SmtpMailer::new(&smtp_config(stub.addr)).unwrap();
    // A malformed recipient cannot be built (`to` is an `EmailAddress`);
    // a malformed sender is refused before anything is sent.
    let mut email = invite_email("maria@patients.example");
    email.from = "not an address".to_owned();
    let err = mailer.send_email(&email).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(!err.to_string().contains("patients.example"), "{err}");
    assert!(stub.received().is_empty());
}

#[tokio::test]
async fn smtp_server_not_listening_is_transient() {
    let addr = closed_port().await;
    let mailer = SmtpMailer::new(&smtp_config(addr)).unwrap();
    let err = mailer
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(!err.to_string().contains("patients.example"), "{err}");
    let err = mailer.check().await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
}

#[tokio::test]
async fn smtp_silent_server_times_out_as_transient() {
    // Accepts connections and never greets.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = smtp_config(addr);
    config.timeout_secs = 1;
    let mailer = SmtpMailer::new(&config).unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        mailer.send_email(&invite_email("maria@patients.example")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn smtp_stall_mid_conversation_is_transient_and_the_pool_recovers() {
    let stub = start_smtp_stub().await;
    let mut config = smtp_config(stub.addr);
    config.timeout_secs = 1;
    let mailer = SmtpMailer::new(&config).unwrap();
    mailer
        .send_email(&invite_email("first@patients.example"))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let err = mailer
        .send_email(&invite_email("stall@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The stalled connection is not reused: the next send gets a fresh one.
    mailer
        .send_email(&invite_email("after@patients.example"))
        .await
        .unwrap();
    mailer.check().await.unwrap();
    let received = stub.received();
    let recipients: Vec<_> = received.iter().map(|r| r.to.clone()).collect();
    assert_eq!(
        recipients,
        vec![
            vec!["first@patients.example".to_owned()],
            vec!["after@patients.example".to_owned()]
        ]
    );
}

#[tokio::test]
async fn smtp_starttls_required_but_not_offered_is_a_clear_error() {
    // The sink offers no STARTTLS unless told to.
    let stub = start_smtp_stub().await;
    stub.state.require_login("enroll", "right-password");
    let mut config = smtp_config(stub.addr);
    config.security = SmtpSecurity::StartTls;
    config.username = Some("enroll".to_owned());
    config.password = Some("right-password".into());
    let mailer = SmtpMailer::new(&config).unwrap();
    let err = mailer
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(err.to_string().contains("does not offer STARTTLS"), "{err}");
    assert!(!err.to_string().contains("patients.example"), "{err}");
    let err = mailer.check().await.unwrap_err();
    assert!(err.to_string().contains("does not offer STARTTLS"), "{err}");
    assert!(stub.received().is_empty());
}

#[tokio::test]
async fn smtp_refused_login_is_permanent_and_names_the_login() {
    let stub = start_smtp_stub().await;
    stub.state.require_login("enroll", "right-password");
    let mut config = smtp_config(stub.addr);
    config.username = Some("enroll".to_owned());
    config.password = Some("wrong-password".into());
    let mailer = SmtpMailer::new(&config).unwrap();
    // `enroll doctor` sees it too.
    let err = mailer.check().await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("refused the login (535)"), "{err}");
    assert!(err.to_string().contains("username and password"), "{err}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");

    // A server that offers no AUTH at all while a login is configured.
    let open = start_smtp_stub().await;
    let mut config = smtp_config(open.addr);
    config.username = Some("enroll".to_owned());
    config.password = Some("right-password".into());
    let mailer = SmtpMailer::new(&config).unwrap();
    let err = mailer
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("no login method"), "{err}");
    assert!(open.received().is_empty());
}

#[tokio::test]
async fn smtp_pool_never_opens_more_than_pool_size_connections() {
    let stub = start_smtp_stub().await;
    let mut config = smtp_config(stub.addr);
    config.pool_size = 3;
    let mailer = Arc::new(SmtpMailer::new(&config).unwrap());

    // One after the other: one connection does it all.
    for i in 0..10 {
        let mut email = invite_email(&format!("seq{i}@patients.example"));
        email.message_id = format!("seq-{i}@enroll.example");
        mailer.send_email(&email).await.unwrap();
    }
    assert_eq!(stub.state.connections(), 1);

    // 60 at once, more than the pool: they wait for a connection.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..60 {
        let mailer = Arc::clone(&mailer);
        sends.spawn(async move {
            let mut email = invite_email(&format!("par{i}@patients.example"));
            email.message_id = format!("par-{i}@enroll.example");
            mailer.send_email(&email).await
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
    assert_eq!(stub.count(), 70);
    assert_eq!(stub.message_ids().len(), 70);
    let connections = stub.state.connections();
    assert!(
        (1..=3).contains(&connections),
        "{connections} connections for a pool of 3"
    );
}

#[tokio::test]
async fn smtp_stall_after_the_message_times_out_and_the_connection_is_not_reused() {
    let stub = start_smtp_stub().await;
    lock(&stub.state.stall_data).insert("slow@patients.example".to_owned());
    let mut config = smtp_config(stub.addr);
    config.timeout_secs = 1;
    config.pool_size = 1;
    let mailer = SmtpMailer::new(&config).unwrap();
    mailer
        .send_email(&invite_email("first@patients.example"))
        .await
        .unwrap();
    assert_eq!(stub.state.connections(), 1);

    // The server takes the whole message and never answers the final dot.
    let started = std::time::Instant::now();
    let err = mailer
        .send_email(&invite_email("slow@patients.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(err.to_string().contains("within 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The only pooled connection was mid-message: a new one is opened (were
    // the stalled one reused, this send would time out too).
    mailer
        .send_email(&invite_email("after@patients.example"))
        .await
        .unwrap();
    assert_eq!(stub.state.connections(), 2);
    let recipients: Vec<_> = stub.received().iter().map(|r| r.to.clone()).collect();
    assert_eq!(
        recipients,
        vec![
            vec!["first@patients.example".to_owned()],
            vec!["after@patients.example".to_owned()]
        ]
    );
}

#[tokio::test]
async fn smtp_pooled_connection_closed_by_the_server_is_replaced() {
    let state = Arc::new(enroll_notify::testing::SmtpSinkState::default());
    let mut stub = SmtpSink::start_on("127.0.0.1:0".parse().unwrap(), Arc::clone(&state)).await;
    let mailer = SmtpMailer::new(&smtp_config(stub.addr)).unwrap();
    mailer
        .send_email(&invite_email("first@patients.example"))
        .await
        .unwrap();
    // A restart closes the idle pooled connection (the sink's tasks end
    // when this test yields).
    stub.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _stub = SmtpSink::start_on(stub.addr, Arc::clone(&state)).await;
    mailer
        .send_email(&invite_email("after@patients.example"))
        .await
        .unwrap();
    assert_eq!(state.connections(), 2);
    assert_eq!(lock(&state.received).len(), 2);
}

// ---------------------------------------------------------------- SMS

#[derive(Debug, Clone)]
struct SeenRequest {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    form: HashMap<String, String>,
}

type Seen = Arc<Mutex<Vec<SeenRequest>>>;

const SID: &str = "ACtest123";
const TOKEN: &str = "s3cret-token";
const BASIC_AUTH: &str = "Basic QUN0ZXN0MTIzOnMzY3JldC10b2tlbg=="; // ACtest123:s3cret-token

/// The provider stand-in: answers by the `To` number.
async fn sms_stub_handler(
    axum::extract::State(seen): axum::extract::State<Seen>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    seen.lock().unwrap().push(SeenRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        authorization: authorization.clone(),
        content_type: header("content-type"),
        form: form.clone(),
    });
    if authorization.as_deref() != Some(BASIC_AUTH) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate", "status": 401}"#.to_owned(),
        );
    }
    let to = form.get("To").cloned().unwrap_or_default();
    match to.as_str() {
        "+16175550100" => (
            StatusCode::CREATED,
            r#"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}"#.to_owned(),
        ),
        "+16175550111" => (
            StatusCode::BAD_REQUEST,
            format!(
                r#"{{"code": 21211, "message": "The 'To' number {to} is not a valid phone number.", "status": 400}}"#
            ),
        ),
        "+16175550122" => (
            StatusCode::BAD_REQUEST,
            format!(
                r#"{{"code": 21614, "message": "'To' number {to} is not a valid mobile number", "status": 400}}"#
            ),
        ),
        "+16175550144" => (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"code": 20429, "message": "Too Many Requests", "status": 429}"#.to_owned(),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable".to_owned(),
        ),
    }
}

async fn start_sms_stub() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(sms_stub_handler)
        .with_state(Arc::clone(&seen));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn sms_config(addr: SocketAddr) -> SmsConfig {
    SmsConfig {
        base_url: format!("http://{addr}"),
        account_sid: SID.to_owned(),
        auth_token: TOKEN.into(),
        from: "+16175559999".to_owned(),
        timeout_secs: 5,
        webhook_secret: None,
    }
}

fn invite_sms(to: &str) -> OutgoingSms {
    OutgoingSms {
        to: E164Phone::parse(to).unwrap(),
        body: Templates::builtin()
            .render_sms("main-st", &ctx(Language::English))
            .unwrap(),
    }
}

#[tokio::test]
async fn sms_is_posted_in_the_provider_shape() {
    let (addr, seen) = start_sms_stub().await;
    let sender = HttpSmsSender::new(&sms_config(addr)).unwrap();
    let sms = invite_sms("+16175550100");
    let sid = sender.send_sms(&sms).await.unwrap();
    assert_eq!(sid, "SM0123456789abcdef0123456789abcdef");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/2010-04-01/Accounts/ACtest123/Messages.json");
    assert_eq!(request.authorization.as_deref(), Some(BASIC_AUTH));
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.form.get("To").map(String::as_str),
        Some("+16175550100")
    );
    assert_eq!(
        request.form.get("From").map(String::as_str),
        Some("+16175559999")
    );
    assert_eq!(request.form.get("Body"), Some(&sms.body));
    assert_eq!(request.form.len(), 3);
}

#[tokio::test]
async fn sms_refusals_are_classified_without_patient_data() {
    let (addr, seen) = start_sms_stub().await;
    let sender = HttpSmsSender::new(&sms_config(addr)).unwrap();
    let cases = [
        ("+16175550111", true, "21211"),
        ("+16175550122", true, "21614"),
        ("+16175550144", false, "429"),
        ("+16175550133", false, "503"),
    ];
    for (to, permanent, shown) in cases {
        let err = sender.send_sms(&invite_sms(to)).await.unwrap_err();
        assert_eq!(err.is_permanent(), permanent, "{to}: {err}");
        let message = err.to_string();
        assert!(message.contains(shown), "{to}: {message}");
        assert!(!message.contains("6175550"), "{to}: {message}");
        assert!(!message.contains("Maria"), "{to}: {message}");
        assert!(!message.contains("activate"), "{to}: {message}");
    }
    assert_eq!(seen.lock().unwrap().len(), cases.len());

    // A number that is not E.164 cannot even be put in an `OutgoingSms`
    // (`to` is an `E164Phone`, which normalises or refuses).
    assert_eq!(
        E164Phone::parse("617-555-0100").unwrap().as_str(),
        "+16175550100"
    );
    assert!(E164Phone::parse("617-555").is_err());
}

#[tokio::test]
async fn sms_wrong_credentials_are_permanent_and_say_so() {
    let (addr, _seen) = start_sms_stub().await;
    let mut config = sms_config(addr);
    config.auth_token = "wrong".into();
    let sender = HttpSmsSender::new(&config).unwrap();
    let err = sender
        .send_sms(&invite_sms("+16175550100"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn sms_provider_unreachable_is_transient() {
    let addr = closed_port().await;
    let sender = HttpSmsSender::new(&sms_config(addr)).unwrap();
    let err = sender
        .send_sms(&invite_sms("+16175550100"))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
    assert!(!err.to_string().contains("6175550100"), "{err}");
}

#[tokio::test]
async fn senders_work_as_trait_objects() {
    let stub = start_smtp_stub().await;
    let (addr, _seen) = start_sms_stub().await;
    let email: Arc<dyn EmailSender> = Arc::new(SmtpMailer::new(&smtp_config(stub.addr)).unwrap());
    let sms: Arc<dyn SmsSender> = Arc::new(HttpSmsSender::new(&sms_config(addr)).unwrap());
    email
        .send_email(&invite_email("maria@patients.example"))
        .await
        .unwrap();
    assert!(
        !sms.send_sms(&invite_sms("+16175550100"))
            .await
            .unwrap()
            .is_empty()
    );
}
