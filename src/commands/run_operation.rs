//! `seawall run-operation` (hidden): the child process the agent daemon
//! runs each job in. It reads the engine's typed request as JSON on stdin,
//! runs it through the engine, and writes the typed outcome as JSON on
//! stdout; progress goes to stderr as JSON lines. A failed operation is an
//! outcome too: the exit status is non-zero only when no outcome could be
//! written, which the agent reads as a crash.

use crate::progress_view::View;
use anyhow::Context;
use seawall_agent::engine::operation::{run, OperationRequest};
use seawall_agent::engine::progress::Progress;
use std::io::Read;
use std::sync::Arc;

/// Runs one operation from stdin.
pub async fn run_from_stdin() -> anyhow::Result<u8> {
    // A small request, read once, off the async runtime.
    let input = tokio::task::spawn_blocking(|| {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).map(|_| input)
    })
    .await?
    .context("reading the operation request from stdin")?;
    let request: OperationRequest = serde_json::from_slice(&input)
        .context("the operation request on stdin is not one this seawall understands (is the agent daemon the same version?)")?;
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "job", false);
    let outcome = run(&request, progress).await;
    view.finish().await;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(0)
}
