//! `seawall init`.

use crate::args::Global;
use crate::repo_open;
use seawall_common::Repository;

/// Creates the repository.
pub async fn run(g: &Global) -> anyhow::Result<u8> {
    let password = repo_open::password(g)?;
    let storage = repo_open::storage(g).await?;
    let repo = Repository::init(storage, &password).await?;
    if g.json {
        crate::output::json(&serde_json::json!({
            "repository": g.repo,
            "id": repo.config().id,
        }))?;
    } else if !g.quiet {
        println!(
            "created repository {} at {}",
            repo.config().id.short(),
            g.repo
        );
        println!("keep the password safe: without it the data cannot be read");
    }
    Ok(0)
}
