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
