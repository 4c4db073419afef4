//! What the benchmarks share.

use std::sync::Arc;

use enroll_server::{Application, RunningApplication, Runtime, Settings, SystemClock};
use enroll_store::Store;

/// Starts `enroll serve`'s HTTP side over `store` on a free loopback port,
/// without the dispatcher and the MLLP listener, for the benchmarks that
/// measure pages and API calls alone.
pub async fn start_http_only(store: &Store) -> anyhow::Result<RunningApplication> {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    settings.delivery.enabled = false;
    settings.mllp.enabled = false;
    let runtime = Runtime {
        clock: Arc::new(SystemClock),
        store: Some(store.clone()),
        mailbox: None,
    };
    Ok(Application::build(settings, runtime).await?.start().await?)
}

/// Creates `n` complete patients in `practice_id` (MRN `{prefix}-{i}`,
/// email `patient{i}@{domain}`), `concurrency` at a time. In a practice
/// with auto invites on, each queues its chart-added invite.
pub async fn create_complete_patients(
    store: &Store,
    practice_id: i64,
    n: usize,
    concurrency: usize,
    prefix: &str,
    domain: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use futures::StreamExt;
    let source = enroll_store::Source::new("bench", None);
    let mut creates = futures::stream::iter(0..n)
        .map(|i| {
            let (store, source) = (store.clone(), source.clone());
            let mrn = format!("{prefix}-{i}");
            let demographics = enroll_core::Demographics {
                first_name: Some("Rosa".into()),
                last_name: Some(format!("Parks{i}")),
                date_of_birth: Some("1990-07-04".into()),
                birth_sex: Some("F".into()),
                zip: Some("10027".into()),
                email: Some(format!("patient{i}@{domain}")),
                cell_phone: None,
            };
            async move {
                let now = jiff::Timestamp::now();
                store
                    .create_patient(practice_id, &mrn, &demographics, &source, now)
                    .await
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(saved) = creates.next().await {
        saved.context("create a patient")?;
    }
    Ok(())
}
