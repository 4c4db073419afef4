//! The real-browser harness the browser tests share: Debian's chromium
//! driven through chromedriver (WebDriver) by fantoccini, axe-core, and
//! screenshots under `<target>/screenshots/` for a person to look at.
//!
//! Needs `chromedriver` and `chromium` on the PATH (or CHROMEDRIVER and
//! CHROMIUM) and axe-core's `axe.min.js` at ENROLL_AXE_JS; `scripts/test`
//! installs all three. Without them a test says so and passes, unless
//! ENROLL_REQUIRE_BROWSER=1 (as in CI), when it fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// chromedriver on a free port, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn required() -> bool {
    std::env::var("ENROLL_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// What the browser test needs, or why it cannot run.
pub struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
    axe: String,
}

fn tools() -> Result<Tools, String> {
    let chromedriver = find("CHROMEDRIVER", &["chromedriver"]).ok_or("chromedriver not found")?;
    let chromium = find(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .ok_or("chromium not found")?;
    let axe_path = std::env::var("ENROLL_AXE_JS").map_err(|_| "ENROLL_AXE_JS is not set")?;
    let axe = std::fs::read_to_string(&axe_path).map_err(|e| format!("{axe_path}: {e}"))?;
    Ok(Tools {
        chromedriver,
        chromium,
        axe,
    })
}

pub async fn start_driver(tools: &Tools) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&tools.chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

pub async fn browser(driver: &Driver, tools: &Tools, (width, height): (u32, u32)) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": tools.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"), "--lang=en-US"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// axe-core on the page as it is now: no serious or critical violation.
/// And the page kept its Content-Security-Policy: no inline script or
/// style, and every stylesheet it links was allowed and loaded.
pub async fn axe_check(client: &Client, tools: &Tools, page: &str) {
    let policy = client
        .execute(
            "return { inline: document.querySelectorAll('script:not([src]), style').length,\
                      unloaded: [...document.querySelectorAll('link[rel=stylesheet]')]\
                        .filter(l => !l.sheet || l.sheet.cssRules.length === 0).map(l => l.href),\
                      sheets: document.styleSheets.length };",
            vec![],
        )
        .await
        .expect("look at the page's scripts and styles");
    assert_eq!(
        policy["inline"], 0,
        "{page}: inline script or style: {policy}"
    );
    assert_eq!(policy["unloaded"], Value::Array(vec![]), "{page}: {policy}");
    assert!(
        policy["sheets"].as_u64() > Some(0),
        "{page}: no stylesheet: {policy}"
    );
    client.execute(&tools.axe, vec![]).await.expect("load axe");
    let result = client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] })\
               .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact,\
                   nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3) }))))\
               .catch(e => done([{ id: 'axe-error', impact: 'critical', nodes: [String(e)] }]));",
            vec![],
        )
        .await
        .expect("run axe");
    let bad: Vec<&Value> = result
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(bad.is_empty(), "{page}: axe found {bad:#?}");
}

/// The tools, or `None` (the test passes with a note) when they are
/// missing and not required.
pub fn tools_or_skip() -> Option<Tools> {
    match tools() {
        Ok(tools) => Some(tools),
        Err(why) if !required() => {
            eprintln!("skipping the browser test: {why} (scripts/test installs it)");
            None
        }
        Err(why) => panic!("the browser test is required: {why}"),
    }
}

/// What a browser test needs first: the tools and the app on SQLite, or
/// `None` (the test passes with a note) where the tools are missing and
/// not required, or the app cannot start.
pub async fn tools_and_app_or_skip() -> Option<(Tools, crate::TestApp)> {
    let tools = tools_or_skip()?;
    let app = crate::TestApp::start(enroll_store::testing::Engine::Sqlite).await?;
    Some((tools, app))
}

/// The first element `locator` finds, once there is one.
pub async fn wait_for(client: &Client, locator: Locator<'_>) -> Element {
    client.wait().for_element(locator).await.unwrap()
}

/// Clicks the first element `locator` finds, once there is one.
pub async fn click_when_there(client: &Client, locator: Locator<'_>) {
    wait_for(client, locator).await.click().await.unwrap();
}

/// The text of the first element matching `css`, once there is one.
pub async fn text_of(client: &Client, css: &str) -> String {
    // Waits for the element: after a click the next page may still be on
    // its way (a loaded machine answers a form post in more than a moment).
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The text of the first element matching `css` once `done` holds for it
/// (up to 5 s: pages answer in place, the dispatcher runs in between).
pub async fn wait_for_text(client: &Client, css: &str, done: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: still {last:?} after 5 s");
}

/// Screenshots of the whole page at `size`, one viewport at a time
/// (`name.png`, then `name-2.png`... for what is below the fold; a
/// headless window cannot be made taller than its screen), saved as `name`.
pub async fn full_page_screenshot(client: &Client, name: &str, (width, height): (u32, u32)) {
    client.set_window_size(width, height).await.unwrap();
    let measure = "return [document.documentElement.scrollHeight, window.innerHeight]";
    let sizes = client.execute(measure, vec![]).await.unwrap();
    let (page, viewport) = (
        sizes[0].as_u64().unwrap_or(1),
        sizes[1].as_u64().unwrap_or(1).max(1),
    );
    let dir = screenshot_dir();
    for part in 0..page.div_ceil(viewport).clamp(1, 4) {
        client
            .execute(&format!("window.scrollTo(0, {})", part * viewport), vec![])
            .await
            .unwrap();
        let png = client.screenshot().await.unwrap();
        let file = match part {
            0 => format!("{name}.png"),
            n => format!("{name}-{}.png", n + 1),
        };
        std::fs::write(dir.join(file), png).unwrap();
    }
    client
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
}
