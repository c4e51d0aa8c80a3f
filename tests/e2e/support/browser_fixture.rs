//! Headless Chromium (Debian's `chromium`, installed by scripts/setup.sh)
//! rendering a page the tests wrote: the DOM after scripts and layout, a
//! screenshot, and every request the browser tried, caught by a proxy on
//! a loopback port of the test's own (so nothing leaves the machine, and a
//! page that fetches anything is seen doing it).

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hosts Chromium itself calls (updates, time, accounts), not the page.
const BROWSER_OWN: [&str; 4] = ["google.com", "googleapis.com", "gvt1.com", "gstatic.com"];

/// What a render saw.
pub struct Rendered {
    /// The DOM as Chromium serialises it.
    pub dom: String,
    /// Requests the page made (first lines: `GET http://host/...`,
    /// `CONNECT host:443`), the browser's own left out.
    pub page_requests: Vec<String>,
}

/// Renders `page` (a file): its DOM and its requests; with `screenshot`,
/// also a PNG there.
pub fn render(page: &Path, screenshot: Option<&Path>) -> Rendered {
    render_url(&format!("file://{}", page.display()), screenshot, None)
}

/// Renders `url`; `direct` is the one `host:port` the browser reaches
/// without the catching proxy (a server the test started: its
/// certificate is the test CA's, so certificate errors are ignored).
pub fn render_url(url: &str, screenshot: Option<&Path>, direct: Option<&str>) -> Rendered {
    let chromium = crate::fixtures::require("chromium");
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    proxy.set_nonblocking(true).unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (log, stop) = (seen.clone(), done.clone());
    let catcher = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            match proxy.accept() {
                Ok((mut c, _)) => {
                    c.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut buf = [0u8; 512];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let first = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push(first);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--proxy-server=http://127.0.0.1:{port}"))
            .arg(match direct {
                Some(hp) => format!("--proxy-bypass-list=<-loopback>;{hp}"),
                None => "--proxy-bypass-list=<-loopback>".into(),
            })
            .args(direct.map(|_| "--ignore-certificate-errors"))
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dom = run(&["--dump-dom".into()]);
    if let Some(png) = screenshot {
        run(&[
            format!("--screenshot={}", png.display()),
            "--window-size=1100,1400".into(),
        ]);
    }
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    catcher.join().unwrap();
    let page_requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            let host = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_start_matches("http://")
                .split(['/', ':'])
                .next()
                .unwrap_or("")
                .to_string();
            !BROWSER_OWN
                .iter()
                .any(|own| host == *own || host.ends_with(&format!(".{own}")))
        })
        .cloned()
        .collect();
    Rendered { dom, page_requests }
}
