//! The fence of an RDS for PostgreSQL primary. RDS refuses `ALTER SYSTEM`,
//! gives no data directory for `standby.signal` and no way to stop the
//! server from SQL; a parameter group's `default_transaction_read_only`
//! is advisory (any session sets it back). What holds: the application
//! roles lose LOGIN and their sessions are ended, so no application can
//! write until the roles get LOGIN back, which only a role with CREATEROLE
//! can do. A role that could lift its own fence is named in the result.

use crate::engine::postgres::conn::query_error;
use crate::engine::postgres::logical::quote_ident;
use crate::stores::{Done, POLL};
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// What the roles' state was before a fence or a lift.
#[derive(Debug, Default)]
struct Roles {
    /// Roles that exist.
    present: Vec<String>,
    /// Of those, the ones that may log in.
    with_login: Vec<String>,
    /// Of those, the ones that could give themselves LOGIN back.
    can_lift: Vec<String>,
    /// Named in the configuration but missing from the server.
    missing: Vec<String>,
}

async fn roles(client: &tokio_postgres::Client, names: &[String]) -> Result<Roles> {
    let rows = client
        .query(
            "SELECT rolname::text, rolcanlogin, rolcreaterole OR rolsuper
               FROM pg_roles WHERE rolname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(|e| query_error("reading the application roles", e))?;
    let mut out = Roles::default();
    for row in rows {
        let name: String = row.get(0);
        if row.get::<_, bool>(1) {
            out.with_login.push(name.clone());
        }
        if row.get::<_, bool>(2) {
            out.can_lift.push(name.clone());
        }
        out.present.push(name);
    }
    out.missing = names
        .iter()
        .filter(|n| !out.present.contains(n))
        .cloned()
        .collect();
    Ok(out)
}

async fn sessions_of(client: &tokio_postgres::Client, names: &[String]) -> Result<i64> {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
            &[&names],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| query_error("counting the application sessions", e))
}

async fn alter(client: &tokio_postgres::Client, roles: &[String], login: bool) -> Result<()> {
    for role in roles {
        let sql = format!(
            "ALTER ROLE {} {}",
            quote_ident(role),
            if login { "LOGIN" } else { "NOLOGIN" }
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| query_error(&format!("changing LOGIN of role {role}"), e))?;
    }
    Ok(())
}

/// Takes LOGIN from `app_roles` and ends their sessions, waiting until
/// none is left (at most `deadline`).
pub async fn lock_out(
    client: &tokio_postgres::Client,
    app_roles: &[String],
    deadline: Duration,
) -> Result<Done> {
    let started = Instant::now();
    let before = roles(client, app_roles).await?;
    // LOGIN first: a session ended before its role lost LOGIN could log in
    // again in between.
    alter(client, &before.present, false).await?;
    let mut ended = 0_i64;
    loop {
        let left = sessions_of(client, app_roles).await?;
        if left == 0 {
            break;
        }
        if started.elapsed() >= deadline {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "{left} session(s) of {} still open after {deadline:?} although ended (a long statement that ignores pg_terminate_backend?)",
                    app_roles.join(", ")
                ),
            ));
        }
        ended += client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
                &[&app_roles],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| query_error("ending the application sessions", e))?;
        tokio::time::sleep(POLL).await;
    }
    let mut detail = if before.with_login.is_empty() && ended == 0 {
        format!(
            "already locked out: {} may not log in",
            before.present.join(", ")
        )
    } else {
        format!(
            "LOGIN taken from {} and {ended} session(s) ended",
            if before.present.is_empty() {
                "no role".to_string()
            } else {
                before.present.join(", ")
            }
        )
    };
    if !before.missing.is_empty() {
        detail.push_str(&format!(
            "; app_roles names {} which the server does not have",
            before.missing.join(", ")
        ));
    }
    if !before.can_lift.is_empty() {
        detail.push_str(&format!(
            "; WARNING: {} may create roles and could give LOGIN back: give applications roles without CREATEROLE",
            before.can_lift.join(", ")
        ));
    }
    Ok(Done {
        already: before.with_login.is_empty() && ended == 0,
        detail,
        ..Done::default()
    })
}

/// Gives LOGIN back to `app_roles` (on a writable server).
pub async fn let_in(client: &tokio_postgres::Client, app_roles: &[String]) -> Result<String> {
    let before = roles(client, app_roles).await?;
    let locked: Vec<String> = before
        .present
        .iter()
        .filter(|r| !before.with_login.contains(r))
        .cloned()
        .collect();
    alter(client, &locked, true).await?;
    Ok(if locked.is_empty() {
        format!("{} may log in", before.present.join(", "))
    } else {
        format!("LOGIN given back to {}", locked.join(", "))
    })
}
