//! PostgreSQL over TLS (issue 13 item 4): the store connects with
//! `sslmode=verify-full` to a server whose certificate a CA of the
//! database URL's `sslrootcert` signed, refuses one it cannot verify, and
//! `sslmode=require` encrypts without verifying. scripts/test starts its
//! throwaway server with `ssl=on` and a certificate from a test CA it
//! makes (ENROLL_TEST_POSTGRES_CA); against a server without TLS the test
//! skips unless ENROLL_REQUIRE_POSTGRES_TLS=1.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_store::Store;
use enroll_store::testing::{Engine, TestDb};
use sqlx::Connection;

/// The test CA, or `None` (skip) where no TLS server is set up.
fn test_ca() -> Option<String> {
    match std::env::var("ENROLL_TEST_POSTGRES_CA") {
        Ok(ca) => Some(ca),
        Err(_) => {
            assert!(
                std::env::var("ENROLL_REQUIRE_POSTGRES_TLS").as_deref() != Ok("1"),
                "ENROLL_REQUIRE_POSTGRES_TLS=1 but ENROLL_TEST_POSTGRES_CA is not set"
            );
            eprintln!("skipping PostgreSQL TLS: run scripts/test, which starts a server with TLS");
            None
        }
    }
}

/// `url` addressed to `localhost` (the name the certificate holds) with
/// these TLS parameters.
fn with_tls(url: &str, parameters: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some("localhost")).unwrap();
    url.set_query(Some(parameters));
    url.to_string()
}

/// Whether the connection of `url` is encrypted, as the server sees it.
async fn encrypted(url: &str) -> Result<bool, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    Ok(ssl)
}

#[tokio::test]
async fn postgres_connections_are_encrypted_and_the_server_verified() {
    let Some(db) = TestDb::new(Engine::Postgres).await else {
        return;
    };
    let Some(ca) = test_ca() else {
        return;
    };

    let verified = with_tls(&db.url, &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert!(
        encrypted(&verified).await.unwrap(),
        "verify-full is encrypted"
    );
    let store = Store::connect(&verified)
        .await
        .expect("the store connects with verify-full");
    store.migrate().await.expect("and works over it");

    // Without the test CA the server's certificate cannot be verified.
    let unverifiable = with_tls(&db.url, "sslmode=verify-full");
    let refused = encrypted(&unverifiable).await;
    assert!(
        refused.is_err(),
        "a server the CA did not sign is refused: {refused:?}"
    );
    assert!(
        Store::connect(&unverifiable).await.is_err(),
        "the store refuses it too"
    );

    // `require` encrypts without checking who answers.
    let required = with_tls(&db.url, "sslmode=require");
    assert!(encrypted(&required).await.unwrap(), "require is encrypted");
}
