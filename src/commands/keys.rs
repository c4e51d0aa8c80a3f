//! `seawall key`: the repository's passwords.

use crate::args::{Global, KeyArgs, KeyWhat};
use crate::repo_open;
use std::path::Path;

/// The new password, from a file or `SEAWALL_NEW_PASSWORD`.
fn new_password(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let password = match file {
        Some(f) => seawall_common::secret::read_secret_file(f, "new password")?,
        None => match std::env::var_os("SEAWALL_NEW_PASSWORD") {
            Some(p) if !p.is_empty() => p.into_encoded_bytes(),
            _ => anyhow::bail!(
                "no new password: pass --new-password-file FILE (mode 0600) or set SEAWALL_NEW_PASSWORD"
            ),
        },
    };
    // (A file's trailing newline is dropped, as for --password-file.)
    Ok(password)
}

/// Runs `seawall key`.
pub async fn run(g: &Global, a: KeyArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    match a.what {
        KeyWhat::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                crate::output::json(&keys)?;
            } else {
                println!("{:<2}{:<10} {:<20} HOST", "", "ID", "CREATED");
                for k in keys {
                    println!(
                        "{:<2}{:<10} {:<20} {}",
                        if k.current { "*" } else { "" },
                        &k.id[..k.id.len().min(8)],
                        k.created
                            .map(|c| c.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into()),
                        k.hostname
                    );
                }
            }
        }
        KeyWhat::Add { new_password_file } => {
            let id = repo
                .add_key(&new_password(new_password_file.as_deref())?)
                .await?;
            report(g, "added", &id)?;
        }
        KeyWhat::Remove { id } => {
            let removed = repo.remove_key(&id).await?;
            report(g, "removed", &removed)?;
        }
        KeyWhat::Passwd { new_password_file } => {
            let id = repo
                .change_password(&new_password(new_password_file.as_deref())?)
                .await?;
            report(g, "password changed; new key", &id)?;
        }
    }
    Ok(0)
}

fn report(g: &Global, what: &str, id: &str) -> anyhow::Result<()> {
    if g.json {
        crate::output::json(&serde_json::json!({ "done": what, "key": id }))?;
    } else if !g.quiet {
        println!("{what} {}", &id[..id.len().min(8)]);
    }
    Ok(())
}
