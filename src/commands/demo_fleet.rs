//! The fleet part of `seawall demo`: a private CA, a `--dev` coordinator
//! and two agents in two regions (each with its own local repository) as
//! real child processes, schedules that fire every two seconds, a few
//! cycles, then `seawall status`, `agents` and `jobs` as an operator sees them.

use anyhow::{bail, Context, Result};
use seawall_common::tls::issue::{issue, new_ca, Issued};
use seawall_common::tls::Identity;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Children stopped with SIGTERM (then killed) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn save(dir: &Path, name: &str, issued: &Issued) -> Result<()> {
    std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem)?;
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, &issued.key_pem)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tls(pki: &Path, name: &str) -> String {
    format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.join("ca.pem").display(),
        pki.join(format!("{name}.pem")).display(),
        pki.join(format!("{name}.key")).display()
    )
}

/// Runs the fleet demo in `work`, backing up `data` in both regions.
pub fn run(work: &Path, data: &Path, say: &dyn Fn(String)) -> Result<()> {
    let exe = std::env::current_exe().context("finding the seawall binary")?;
    let pki = work.join("pki");
    std::fs::create_dir_all(&pki)?;
    let ca = new_ca("Seawall demo CA", seawall_common::tls::issue::days(30))?;
    save(&pki, "ca", &ca)?;
    let hosts = vec!["127.0.0.1".to_string()];
    let ids = [
        ("c1", Identity::Coordinator { name: "c1".into() }),
        (
            "eu-1",
            Identity::Agent {
                region: "eu-west-1".into(),
                name: "eu-1".into(),
            },
        ),
        (
            "us-1",
            Identity::Agent {
                region: "us-east-1".into(),
                name: "us-1".into(),
            },
        ),
        ("ops", Identity::Operator { name: "ops".into() }),
    ];
    for (name, id) in &ids {
        save(
            &pki,
            name,
            &issue(
                &ca.cert_pem,
                &ca.key_pem,
                id,
                &hosts,
                seawall_common::tls::issue::days(30),
            )?,
        )?;
    }
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let mut config = format!(
        "id = \"c1\"\nlisten = \"{address}\"\nheartbeat = \"1s\"\n{}\n[dev]\nstate = \"{}\"\n",
        tls(&pki, "c1"),
        work.join("coordinator.redb").display()
    );
    for region in ["eu-west-1", "us-east-1"] {
        config.push_str(&format!(
            "\n[[schedules]]\nname = \"{region}-files\"\nregion = \"{region}\"\nsource = \"app-data\"\ncron = \"*/2 * * * * *\"\nretention_after = true\n"
        ));
    }
    std::fs::write(work.join("coordinator.toml"), config)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let spawn = |args: &[&str], log: &str| -> Result<Child> {
        let log = std::fs::File::create(logs.join(log))?;
        Ok(Command::new(&exe)
            .args(args)
            .env("SEAWALL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?)
    };
    let coordinator_toml = work.join("coordinator.toml").display().to_string();
    let mut children = Children(vec![spawn(
        &["coordinator", "--dev", "--config", &coordinator_toml],
        "coordinator.log",
    )?]);
    for (name, region) in [("eu-1", "eu-west-1"), ("us-1", "us-east-1")] {
        let repo = work.join(format!("repo-{region}"));
        let pw = work.join(format!("{name}.password"));
        std::fs::write(&pw, "seawall demo fleet")?;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
        let init = Command::new(&exe)
            .args(["-q", "--password-file"])
            .arg(&pw)
            .arg("-r")
            .arg(&repo)
            .arg("init")
            .output()?;
        if !init.status.success() {
            bail!(
                "init {}: {}",
                repo.display(),
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let agent = format!(
            "id = \"{name}\"\nregion = \"{region}\"\ncoordinators = [\"{address}\"]\nstate_dir = \"{}\"\n{}\n[repository]\nrepo = \"{}\"\npassword_file = \"{}\"\n\n[[sources]]\nname = \"app-data\"\nkind = \"files\"\npaths = [\"{}\"]\n[sources.retention]\nkeep_last = 3\n",
            work.join(format!("state-{name}")).display(),
            tls(&pki, name),
            repo.display(),
            pw.display(),
            data.display()
        );
        let path = work.join(format!("{name}.toml"));
        std::fs::write(&path, agent)?;
        children.0.push(spawn(
            &["agent", "--config", &path.display().to_string()],
            &format!("{name}.log"),
        )?);
    }
    say(format!(
        "7. started a fleet: a --dev coordinator on {address} and agents eu-1 (eu-west-1) and us-1 (us-east-1), mutual TLS from a fresh CA; schedules fire every 2 s"
    ));
    let op = |args: &[&str]| -> Result<std::process::Output> {
        Ok(Command::new(&exe)
            .args(args)
            .args(["--coordinator", &address, "--ca"])
            .arg(pki.join("ca.pem"))
            .arg("--cert")
            .arg(pki.join("ops.pem"))
            .arg("--key")
            .arg(pki.join("ops.key"))
            .output()?)
    };
    // A few cycles: until each region has three successful backups.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = op(&["--json", "backups"])?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let count = |r: &str| {
            list.as_array()
                .map(|a| a.iter().filter(|b| b["region"] == r).count())
                .unwrap_or(0)
        };
        if count("eu-west-1") >= 3 && count("us-east-1") >= 3 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the fleet made no three backups per region within 90 s; logs in {}",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    say("8. three scheduled cycles ran in each region (backup, then retention keeping 3); the operator's view:".into());
    for args in [&["status"][..], &["agents"], &["jobs", "--limit", "8"]] {
        let out = op(args)?;
        say(String::from_utf8_lossy(&out.stdout).trim_end().to_string());
    }
    drop(children);
    Ok(())
}

/// The directory the fleet demo backs up.
pub fn data_dir(work: &Path) -> PathBuf {
    work.join("source/app-data")
}
