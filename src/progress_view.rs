//! Shows a [`Progress`] while work runs: a bar on a terminal, a log line
//! every ten seconds elsewhere, nothing with --json or --quiet; with
//! `SEAWALL_PROGRESS=json` (set by the agent daemon) a JSON line a second.

use crate::output::size;
use indicatif::{ProgressBar, ProgressStyle};
use seawall_agent::engine::progress::Progress;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running progress display; stop it with [`View::finish`].
pub struct View {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl View {
    /// Starts showing `progress` for an operation called `what`.
    pub fn start(progress: Arc<Progress>, what: &'static str, enabled: bool) -> View {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        // A supervising agent asks for one JSON line a second on stderr.
        let json = std::env::var("SEAWALL_PROGRESS").as_deref() == Ok("json");
        let task = tokio::spawn(async move {
            if json {
                loop {
                    eprintln!(
                        "{}",
                        serde_json::json!({"progress": {
                            "bytes_done": Progress::get(&progress.bytes_done),
                            "bytes_total": Progress::get(&progress.bytes_total),
                            "files_done": Progress::get(&progress.files_done),
                        }})
                    );
                    tokio::select! {
                        _ = stopped.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            if !enabled {
                return;
            }
            let bar = terminal.then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(what);
                bar
            });
            let started = Instant::now();
            let mut last_log = Instant::now();
            loop {
                let done = Progress::get(&progress.bytes_done);
                let files = Progress::get(&progress.files_done);
                let total = Progress::get(&progress.bytes_total).max(done);
                if let Some(bar) = &bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    let final_mark = if progress.totals_final.load(Ordering::Relaxed) {
                        ""
                    } else {
                        "+"
                    };
                    bar.set_message(format!(
                        "{files}/{}{final_mark} files",
                        Progress::get(&progress.files_total)
                    ));
                } else if last_log.elapsed() >= Duration::from_secs(10) {
                    last_log = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "{what}: {} in {files} files, {}, {} added",
                        size(done),
                        crate::output::rate(done, secs),
                        size(Progress::get(&progress.bytes_added))
                    );
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        View { stop, task }
    }

    /// Stops the display and clears the bar.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
