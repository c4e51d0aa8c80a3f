//! Command-line grammar, kept apart from what the commands do.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Seawall: backups that restore, failovers that meet their RTO and RPO.
#[derive(Debug, Parser)]
#[command(name = "seawall", version, about)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Repository and output options.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Repository: a path (the default), file:///PATH or s3://BUCKET/PREFIX.
    #[arg(
        long,
        short = 'r',
        env = "SEAWALL_REPOSITORY",
        global = true,
        default_value = ""
    )]
    pub repo: String,
    /// File holding the repository password (else SEAWALL_PASSWORD).
    #[arg(long, env = "SEAWALL_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print errors only.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// S3 endpoint URL of an S3-compatible server.
    #[arg(long, env = "SEAWALL_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "SEAWALL_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Address buckets by path, as most S3-compatible servers need.
    #[arg(long, env = "SEAWALL_S3_PATH_STYLE", global = true)]
    pub s3_path_style: bool,
    /// Request server-side encryption: AES256 or aws:kms.
    #[arg(long, env = "SEAWALL_S3_SSE", global = true)]
    pub s3_sse: Option<String>,
    /// KMS key id for --s3-sse aws:kms.
    #[arg(long, env = "SEAWALL_S3_SSE_KMS_KEY_ID", global = true)]
    pub s3_sse_kms_key_id: Option<String>,
    /// S3 access key id (else the standard AWS environment, profile or instance role).
    #[arg(
        long,
        env = "SEAWALL_S3_ACCESS_KEY_ID",
        global = true,
        requires = "s3_secret_access_key_file"
    )]
    pub s3_access_key_id: Option<String>,
    /// File holding the S3 secret access key (refused if world-readable).
    #[arg(
        long,
        env = "SEAWALL_S3_SECRET_ACCESS_KEY_FILE",
        global = true,
        requires = "s3_access_key_id"
    )]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Requests to S3 in flight at most.
    #[arg(long, global = true)]
    pub s3_max_concurrency: Option<usize>,
    /// Seconds to wait for a conflicting repository lock.
    #[arg(long, global = true, default_value_t = 60)]
    pub lock_wait: u64,
    /// Directory of the PostgreSQL programs (else PATH).
    #[arg(long, env = "SEAWALL_PG_BIN", global = true)]
    pub pg_bin: Option<PathBuf>,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init,
    /// Back up a source.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot.
    Restore(Box<RestoreArgs>),
    /// Check the repository's integrity.
    Verify(VerifyArgs),
    /// Remove snapshots by a retention policy.
    Forget(ForgetArgs),
    /// Remove data that no snapshot needs.
    Prune(PruneArgs),
    /// Remove stale locks.
    Unlock(UnlockArgs),
    /// Copy what another region's replica of this repository lacks (--check: only compare).
    Mirror(MirrorArgs),
    /// The repository's passwords: list, add, remove, change (no data is rewritten).
    Key(KeyArgs),
    /// List what a snapshot holds, everything under PATH (default: all).
    Ls(LsArgs),
    /// Write a file or database stream to stdout (a directory as tar).
    Dump(DumpArgs),
    /// Logical size of the snapshots against what the repository stores.
    Stats,
    /// Which snapshots hold a path matching a glob (`*.conf`, `/srv/**/key`).
    Find(FindArgs),
    /// What changed between two snapshots.
    Diff(DiffArgs),
    /// Change the tags of snapshots (each is rewritten under a new id).
    Tag(TagArgs),
    /// Repair repository metadata.
    Repair(RepairArgs),
    /// Archive a PostgreSQL WAL file (use as archive_command = 'seawall wal-push %p').
    WalPush(WalPushArgs),
    /// Fetch an archived WAL file (use as restore_command = 'seawall wal-fetch %f %p').
    WalFetch(WalFetchArgs),
    /// Stream WAL with pg_receivewal into the archive, for an RPO of seconds.
    WalStream(WalStreamArgs),
    /// Run integrity checks against a live source.
    Check(CheckArgs),
    /// Create the private CA and the certificates of coordinators, agents and operators.
    Certs(CertsArgs),
    /// Run a coordinator replica (etcd election, schedules, the gRPC API).
    Coordinator(CoordinatorArgs),
    /// Run the regional agent daemon.
    Agent(AgentArgs),
    /// The coordinator's view: leader, agents, newest backup per source.
    Status(OperatorArgs),
    /// Agents registered with the leader.
    Agents(AgentsArgs),
    /// Schedules with their last and next runs.
    Schedules(OperatorArgs),
    /// Jobs, newest first; --watch follows one job to its end.
    Jobs(JobsArgs),
    /// Successful backups the coordinator recorded.
    Backups(BackupsArgs),
    /// The coordinator's audit log, newest first.
    Audit(AuditArgs),
    /// Revoke a certificate: every coordinator replica refuses it from now on.
    Revoke(RevokeArgs),
    /// Certificates revoked so far.
    Revoked(OperatorArgs),
    /// Each service's replication: lag, canaries and a verdict against its RPO.
    Replication(ReplicationArgs),
    /// Move a service's primary to another region, and follow or stop failovers.
    Failover(FailoverArgs),
    /// Restore and failover drills: run one, follow it, read its journal and report page.
    Drill(DrillArgs),
    /// Show what Seawall does, on a local sample, with timings.
    Demo(DemoArgs),
    /// Generate or change benchmark data (for bench/).
    #[command(hide = true)]
    BenchData(BenchDataArgs),
    /// Simulate many agents against a coordinator (for bench/fleet.sh).
    #[command(hide = true)]
    BenchAgents(BenchAgentsArgs),
    /// Run one operation from a JSON request on stdin (the agent's job child).
    #[command(hide = true)]
    RunOperation,
}

/// `snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots taken by agents of this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only snapshots taken on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots taken by this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only snapshots carrying this tag (repeat: all of them).
    #[arg(long)]
    pub tag: Vec<String>,
}

/// `coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// coordinator.toml.
    #[arg(long, env = "SEAWALL_COORDINATOR_CONFIG")]
    pub config: PathBuf,
    /// One replica with its state in the embedded store of [dev] (no etcd).
    #[arg(long)]
    pub dev: bool,
    /// Replica name, replacing the file's `id` (a StatefulSet passes its pod name).
    #[arg(long, env = "SEAWALL_COORDINATOR_ID")]
    pub id: Option<String>,
    /// Address told to agents and operators, replacing the file's `advertise`.
    #[arg(long, env = "SEAWALL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
}

/// `agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// agent.toml.
    #[arg(long, env = "SEAWALL_AGENT_CONFIG")]
    pub config: PathBuf,
    /// Agent name, replacing the file's `id` (a DaemonSet passes its pod name).
    #[arg(long, env = "SEAWALL_AGENT_ID")]
    pub id: Option<String>,
    /// Check the configuration and certificate, print what the agent would serve, and exit.
    #[arg(long)]
    pub check: bool,
    /// Set the agent's epoch mark to EPOCH and exit (with the agent stopped):
    /// recovery after a forged epoch, when the coordinator says so.
    #[arg(long, value_name = "EPOCH", conflicts_with = "check")]
    pub reset_epoch: Option<u64>,
}

/// How operator commands reach and prove themselves to the coordinator.
#[derive(Debug, Args, Clone)]
pub struct OperatorArgs {
    /// A coordinator replica (host:port or https://host:port); followers send you to the leader.
    #[arg(long, env = "SEAWALL_COORDINATOR", default_value = "127.0.0.1:7443")]
    pub coordinator: String,
    /// The Seawall CA certificate.
    #[arg(long, env = "SEAWALL_CA")]
    pub ca: Option<PathBuf>,
    /// Operator certificate (seawall certs operator).
    #[arg(long, env = "SEAWALL_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, env = "SEAWALL_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding the operator token (instead of a certificate).
    #[arg(long, env = "SEAWALL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// `agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Follow this job until it ends.
    #[arg(long, conflicts_with = "cancel")]
    pub watch: Option<String>,
    /// Cancel this pending or running job (its agent stops it).
    #[arg(long)]
    pub cancel: Option<String>,
    /// Why, with --cancel (kept in the job's history and the audit log).
    #[arg(long, requires = "cancel")]
    pub reason: Option<String>,
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// How many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (4+ digits) or `latest`.
    pub snapshot: String,
    /// A path in the snapshot, or `stream:NAME`.
    #[arg(default_value = "/")]
    pub path: String,
    /// Only the entries directly under PATH.
    #[arg(long)]
    pub no_recursive: bool,
}

/// `find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// A glob matched against each entry's path and name.
    pub pattern: String,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot.
    pub from: String,
    /// The newer snapshot.
    pub to: String,
}

/// `tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Snapshots (ids of 4+ digits, or `latest`).
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Add this tag (repeat).
    #[arg(long)]
    pub add: Vec<String>,
    /// Remove this tag (repeat).
    #[arg(long)]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeat).
    #[arg(long)]
    pub set: Vec<String>,
}

/// `dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id (4+ digits) or `latest`.
    pub snapshot: String,
    /// A file, a directory (written as tar) or `stream:NAME`.
    pub path: String,
}

/// `key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: KeyWhat,
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyWhat {
    /// List the key files; the one the password opened is marked.
    List,
    /// Add a password (another key file wrapping the same master key).
    Add {
        /// File holding the new password (owner-only); else SEAWALL_NEW_PASSWORD.
        #[arg(long, env = "SEAWALL_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key file by id (at least 4 digits); not the one in use, not the last.
    Remove {
        /// The key's id, from `key list`.
        id: String,
    },
    /// Change the password in use: add the new one, remove the old one's key file.
    Passwd {
        /// File holding the new password (owner-only); else SEAWALL_NEW_PASSWORD.
        #[arg(long, env = "SEAWALL_NEW_PASSWORD_FILE")]
        new_password_file: Option<PathBuf>,
    },
}

/// `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The repository to copy from (default: --repo).
    #[arg(long)]
    pub from: Option<String>,
    /// The replica to copy into: a path, file:///PATH or s3://BUCKET/PREFIX.
    #[arg(long)]
    pub to: String,
    /// The target's S3 endpoint, when it is not the source's.
    #[arg(long)]
    pub to_s3_endpoint: Option<String>,
    /// The target's S3 region, when it is not the source's.
    #[arg(long)]
    pub to_s3_region: Option<String>,
    /// Also delete from the target what the source no longer holds (its retention).
    #[arg(long, conflicts_with = "check")]
    pub prune: bool,
    /// Compare only: name what the target lacks or holds differently, and the snapshots that hurts.
    #[arg(long)]
    pub check: bool,
    /// Objects copied at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// `revoke`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["fingerprint", "pem"])))]
pub struct RevokeArgs {
    /// SHA-256 fingerprint of the certificate (as `seawall certs` and `seawall agents --json` print it).
    pub fingerprint: Option<String>,
    /// The certificate's PEM file instead of its fingerprint.
    #[arg(long, value_name = "FILE")]
    pub pem: Option<PathBuf>,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries (newest first).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Only entries from the last DURATION ("1h", "7d").
    #[arg(long, value_parser = duration_arg)]
    pub since: Option<std::time::Duration>,
    /// Only entries older than the one with this key (the next page: the
    /// key the previous listing ended with).
    #[arg(long, value_name = "KEY")]
    pub before: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `failover`.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: FailoverWhat,
}

/// `failover` subcommands.
#[derive(Debug, Subcommand)]
pub enum FailoverWhat {
    /// What a failover would do, the lag and the expected loss; nothing is changed.
    Plan(FailoverStartArgs),
    /// Start a failover; --wait follows it until the new primary is served (its post-check passed).
    Run(FailoverStartArgs),
    /// A failover's steps, evidence and achieved RTO/RPO (the newest without ID).
    Status(FailoverStatusArgs),
    /// Failovers, newest first.
    List(FailoverListArgs),
    /// Stop a running failover before its next step (what was done stays done).
    Abort(FailoverAbortArgs),
}

/// `failover plan` and `failover run`.
#[derive(Debug, Args)]
pub struct FailoverStartArgs {
    /// The service (as [[services]] names it).
    pub service: String,
    /// The region to fail over to (with --failback: default the region the topology names primary).
    #[arg(long, required_unless_present = "failback", default_value = "")]
    pub to: String,
    /// Planned: fence the old primary and let the standby catch up first (zero loss).
    #[arg(long)]
    pub switchover: bool,
    /// Fail back: rebuild the old primary region's stores as standbys of the current primary (pg_rewind, or a base backup; Redis REPLICAOF), then switch over to them.
    #[arg(long, conflicts_with = "switchover")]
    pub failback: bool,
    /// With --failback: stop once the rebuilt standbys follow (no switchover).
    #[arg(long, requires = "failback")]
    pub standby_only: bool,
    /// Go on although the standby lags beyond the service's bound (the loss is recorded).
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Follow the failover until its post-check passed, the achieved RTO/RPO known (run only; `failover status ID --watch` follows the rest); exit 0 unless it failed.
    #[arg(long)]
    pub wait: bool,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `failover status`.
#[derive(Debug, Args)]
pub struct FailoverStatusArgs {
    /// The failover's id (default: the newest).
    pub id: Option<String>,
    /// Print it again at every change until it ends.
    #[arg(long)]
    pub watch: bool,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `failover list`.
#[derive(Debug, Args)]
pub struct FailoverListArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `failover abort`.
#[derive(Debug, Args)]
pub struct FailoverAbortArgs {
    /// The failover's id.
    pub id: String,
    /// Why (kept in the record and the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: DrillWhat,
}

/// `drill` subcommands.
#[derive(Debug, Subcommand)]
pub enum DrillWhat {
    /// Restore a service's sources (or one source) from a region's repository into scratch instances, check them, tear them down.
    Restore(DrillRestoreArgs),
    /// Switch a service over to another region, check it, and fail back: both directions timed.
    Failover(DrillFailoverArgs),
    /// Run a [[scenarios]] entry's drill against its objectives.
    Run(DrillRunArgs),
    /// A drill's journal: steps, evidence, verdict, achieved RTO and RPO (the newest without ID).
    Show(DrillShowArgs),
    /// Drills, newest first.
    List(DrillListArgs),
    /// Write a drill's report page: one self-contained HTML file.
    Report(DrillReportArgs),
}

/// `drill restore`.
#[derive(Debug, Args)]
pub struct DrillRestoreArgs {
    /// The service (as [[services]] names it), or one source of its backups.
    pub service: String,
    /// The region whose repository is restored from (default: a cold region's, else the primary's).
    #[arg(long)]
    pub region: Option<String>,
    /// The recovery point: latest, "random-within DURATION" or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// Read every row and page as well: PostgreSQL exact row counts of every table and pg_amcheck.
    #[arg(long)]
    pub deep: bool,
    /// Restore the region's RDS for PostgreSQL instances from their automated backups (RestoreDBInstanceToPointInTime into scratch instances, checked, deleted) instead of from a repository; the region defaults to the primary's.
    #[arg(long)]
    pub rds: bool,
    /// Follow the drill until it ends; exit 0 when its objectives were met.
    #[arg(long)]
    pub wait: bool,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill failover`.
#[derive(Debug, Args)]
pub struct DrillFailoverArgs {
    /// The service (as [[services]] names it).
    pub service: String,
    /// The region to switch over to (default: the service's standby region).
    #[arg(long)]
    pub to: Option<String>,
    /// Follow the drill until it ends; exit 0 when its objectives were met.
    #[arg(long)]
    pub wait: bool,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill run`.
#[derive(Debug, Args)]
pub struct DrillRunArgs {
    /// The scenario's name (quote it: "complete outage").
    pub scenario: String,
    /// Follow the drill until it ends; exit 0 when its objectives were met.
    #[arg(long)]
    pub wait: bool,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill show`.
#[derive(Debug, Args)]
pub struct DrillShowArgs {
    /// The drill's id (default: the newest).
    pub id: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill list`.
#[derive(Debug, Args)]
pub struct DrillListArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `drill report`.
#[derive(Debug, Args)]
pub struct DrillReportArgs {
    /// The drill's id (default: the newest).
    pub id: Option<String>,
    /// The file to write.
    #[arg(long)]
    pub html: std::path::PathBuf,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `replication`.
#[derive(Debug, Args)]
pub struct ReplicationArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `backups`.
#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only this source (with --region).
    #[arg(long, requires = "region")]
    pub source: Option<String>,
    /// Connection.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory holding ca.pem and ca.key, where new files are written.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Days the certificate is valid (default: 3650 for the CA, 365 otherwise).
    #[arg(long, conflicts_with = "valid_for")]
    pub days: Option<u32>,
    /// How long the certificate is valid, as a duration ("6h", "30m"): for
    /// short-lived certificates that are renewed on disk.
    #[arg(long, value_parser = duration_arg)]
    pub valid_for: Option<std::time::Duration>,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
    /// What to create.
    #[command(subcommand)]
    pub what: CertsWhat,
}

/// Certificates `certs` creates.
#[derive(Debug, Subcommand)]
pub enum CertsWhat {
    /// A new CA: ca.pem and ca.key (keep ca.key offline after the first install).
    Ca {
        /// The CA's common name.
        #[arg(long, default_value = "Seawall CA")]
        name: String,
    },
    /// A coordinator replica's certificate (server and client), for its host names and addresses.
    Coordinator {
        /// Replica name (files NAME.pem, NAME.key).
        #[arg(long)]
        name: String,
        /// DNS name or IP address agents and operators dial (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// An agent's certificate, bound to the one region it may act in.
    Agent {
        /// Agent name (files NAME.pem, NAME.key).
        #[arg(long)]
        name: String,
        /// The region.
        #[arg(long)]
        region: String,
    },
    /// An operator's certificate for the operator API.
    Operator {
        /// Operator name (files NAME.pem, NAME.key).
        #[arg(long)]
        name: String,
    },
}

/// `bench-agents`.
#[derive(Debug, Args)]
pub struct BenchAgentsArgs {
    /// Coordinator address (host:port).
    #[arg(long)]
    pub coordinator: String,
    /// Its process id, for CPU and memory figures.
    #[arg(long)]
    pub coordinator_pid: u32,
    /// Directory with ca.pem, ca.key, ops.pem, ops.key.
    #[arg(long)]
    pub pki: PathBuf,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Regions they spread over.
    #[arg(long, default_value_t = 10)]
    pub regions: usize,
    /// Heartbeat interval.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Seconds of steady heartbeats measured.
    #[arg(long, default_value_t = 60)]
    pub hold_secs: u64,
}

/// `bench-data`.
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// Directory to write the dataset into.
    pub dir: PathBuf,
    /// Size of the dump-like file in MiB.
    #[arg(long, default_value_t = 1536)]
    pub dump_mib: u64,
    /// Number of small files.
    #[arg(long, default_value_t = 25_000)]
    pub small_files: u64,
    /// Instead of generating, change this percentage of an existing dataset.
    #[arg(long)]
    pub mutate: Option<f64>,
}

/// `backup`: a source here and now (`backup files ...`), or `--now` through
/// the coordinator. Global flags such as `--repo` may come before or after
/// `backup`, so the two forms are told apart in the command, not by clap.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The source, backed up here and now.
    #[command(subcommand)]
    pub source: Option<BackupSource>,
    /// Ask the coordinator to back up --source in --region now, through its agent.
    #[arg(long, requires_all = ["region", "source_name"])]
    pub now: bool,
    /// Region of the source (with --now).
    #[arg(long)]
    pub region: Option<String>,
    /// Source name as the region's agent configures it (with --now).
    #[arg(long = "source", id = "source_name")]
    pub source_name: Option<String>,
    /// Full instead of incremental (with --now).
    #[arg(long)]
    pub full: bool,
    /// Follow the job until it ends (with --now).
    #[arg(long)]
    pub wait: bool,
    /// Connection (with --now).
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// Sources `backup` can read.
#[derive(Debug, Subcommand)]
pub enum BackupSource {
    /// Files and directories.
    Files(FilesArgs),
    /// A PostgreSQL server: logical dumps, or a physical base backup.
    Postgres(PostgresArgs),
    /// A Redis server: a consistent RDB over the replication protocol, or
    /// with --keys only the matching keys (application state).
    Redis(RedisArgs),
}

/// How a database source's streams are stored.
#[derive(Debug, Args)]
pub struct StreamStoreArgs {
    /// Tag the snapshot.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Encoder threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// zstd level for data (1 is fast; 19 is small).
    #[arg(long, default_value_t = 1)]
    pub compression_level: i32,
}

/// TLS files for rediss:// URLs.
#[derive(Debug, Args)]
pub struct RedisTlsArgs {
    /// CA certificate(s) that signed the Redis server's certificate (PEM; default: system roots).
    #[arg(long, env = "SEAWALL_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// Client certificate for servers with tls-auth-clients (PEM).
    #[arg(long, env = "SEAWALL_REDIS_CERT", requires = "redis_key")]
    pub redis_cert: Option<PathBuf>,
    /// Private key of --redis-cert (PEM).
    #[arg(long, env = "SEAWALL_REDIS_KEY", requires = "redis_cert")]
    pub redis_key: Option<PathBuf>,
}

impl RedisTlsArgs {
    /// The files as the Redis source takes them.
    pub fn files(&self) -> seawall_agent::engine::redis::RedisTls {
        seawall_agent::engine::redis::RedisTls {
            ca: self.redis_ca.clone(),
            cert: self.redis_cert.clone(),
            key: self.redis_key.clone(),
        }
    }
}

/// `backup redis`.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// redis[s]://[user:password@]host:port[/db] (for an RDB the user needs
    /// PSYNC, REPLCONF and INFO; for --keys SCAN, DUMP, PTTL, TIME, MULTI, EXEC and INFO).
    #[arg(long, env = "SEAWALL_REDIS_URL", hide_env_values = true)]
    pub url: String,
    /// Capture only keys matching this Redis glob pattern (repeat), with
    /// their expiries, instead of a whole RDB.
    #[arg(long)]
    pub keys: Vec<String>,
    /// TOML file of [[keys]] patterns, each with an optional restore_ttl rule.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Let the server stream the RDB without saving it to its disk, even if
    /// it first waits repl-diskless-sync-delay (5 s by default). Default:
    /// diskless when the server's delay is 0 and repl-diskless-sync is yes,
    /// else through its disk.
    #[arg(long, conflicts_with_all = ["keys", "keys_file", "disk_transfer"])]
    pub diskless: bool,
    /// Have the server save the RDB to its disk and send the file, even
    /// where a diskless transfer would not wait.
    #[arg(long, conflicts_with_all = ["keys", "keys_file"])]
    pub disk_transfer: bool,
    /// TLS files.
    #[command(flatten)]
    pub tls: RedisTlsArgs,
    /// Tags, threads and compression.
    #[command(flatten)]
    pub store: StreamStoreArgs,
}

/// `backup postgres`.
#[derive(Debug, Args)]
pub struct PostgresArgs {
    /// Connection string: 'host=H port=P user=U' or postgresql://U@H:P/D.
    #[arg(long, env = "SEAWALL_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Database to dump (repeat; default: every database). Logical only.
    #[arg(long, conflicts_with = "physical")]
    pub database: Vec<String>,
    /// Take a physical base backup with pg_basebackup instead of dumps.
    #[arg(long)]
    pub physical: bool,
    /// Skip roles and tablespaces (pg_dumpall --globals-only needs a superuser).
    #[arg(long, conflicts_with = "physical")]
    pub no_globals: bool,
    /// Tables read at once: large tables are dumped by COPY beside pg_dump
    /// in one exported snapshot (default: the number of cores; 1 = pg_dump alone).
    #[arg(long, conflicts_with = "physical")]
    pub jobs: Option<usize>,
    /// Size in MiB from which a table is dumped apart.
    #[arg(long, hide = true, default_value_t = 32)]
    pub split_min_mib: i64,
    /// Let the starting checkpoint spread out instead of forcing it now.
    #[arg(long, requires = "physical")]
    pub spread_checkpoint: bool,
    /// Read the data directory and tablespaces here, between
    /// pg_backup_start and pg_backup_stop, taking unchanged files from the
    /// last such snapshot (run on the database host) instead of pg_basebackup.
    #[arg(long, requires = "physical")]
    pub file_level: bool,
    /// The data directory as this host sees it (default: the server's data_directory).
    #[arg(long, requires = "file_level")]
    pub data_dir: Option<PathBuf>,
    /// Read every file even when size and times are unchanged; content
    /// decides what is stored (pgBackRest's --delta).
    #[arg(long, requires = "file_level")]
    pub delta: bool,
    /// Take nothing from an earlier snapshot.
    #[arg(long, requires = "file_level")]
    pub full: bool,
    /// Tags, threads and compression.
    #[command(flatten)]
    pub store: StreamStoreArgs,
}

/// `wal-push`.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
    /// Private spool directory for batch markers (default: $TMPDIR/seawall-spool-UID).
    #[arg(long, env = "SEAWALL_SPOOL")]
    pub spool: Option<PathBuf>,
    /// Most files archived per call, counting the one asked for.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Files archived at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// `wal-fetch`.
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The WAL file name (%f).
    pub file: String,
    /// Where to write it (%p).
    pub path: PathBuf,
    /// Private spool directory for prefetched segments (default: $TMPDIR/seawall-spool-UID).
    #[arg(long, env = "SEAWALL_SPOOL")]
    pub spool: Option<PathBuf>,
    /// Segments fetched ahead.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
}

/// `wal-stream`.
#[derive(Debug, Args)]
pub struct WalStreamArgs {
    /// Connection string of the server (its user needs the REPLICATION attribute).
    #[arg(long, env = "SEAWALL_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Local staging directory pg_receivewal writes into.
    #[arg(long)]
    pub dir: PathBuf,
    /// Replication slot (created if absent) that keeps WAL on the server while the stream is down.
    #[arg(long, default_value = "seawall")]
    pub slot: String,
    /// Seconds between uploads of the segment being written: the RPO.
    #[arg(long, default_value_t = 5)]
    pub partial_every: u64,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// What to check.
    #[command(subcommand)]
    pub what: CheckWhat,
}

/// Checkable sources.
#[derive(Debug, Subcommand)]
pub enum CheckWhat {
    /// A PostgreSQL database: row counts, checks from a file, pg_amcheck.
    Postgres(PgCheckArgs),
    /// Where a PostgreSQL or Redis server stands in its replication: role, positions, lag.
    Replication(ReplicationCheckArgs),
}

/// `check replication`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("store").required(true).args(["dsn", "url"])))]
pub struct ReplicationCheckArgs {
    /// A PostgreSQL server (primary or standby).
    #[arg(long, env = "SEAWALL_PG_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// A Redis server (master or replica).
    #[arg(long, env = "SEAWALL_REDIS_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// TLS files for rediss:// URLs.
    #[command(flatten)]
    pub tls: RedisTlsArgs,
}

/// `check postgres`.
#[derive(Debug, Args)]
pub struct PgCheckArgs {
    /// Connection string of the database to check.
    #[arg(long, env = "SEAWALL_PG_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Checks file (TOML): tables that must not be empty, minimum rows, queries that must return no rows.
    #[arg(long)]
    pub checks: Option<PathBuf>,
    /// Skip pg_amcheck.
    #[arg(long)]
    pub no_amcheck: bool,
}

/// `backup files`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Paths to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Exclude names (a glob without `/`) or absolute paths (a glob with `/`).
    #[arg(long, short = 'e')]
    pub exclude: Vec<String>,
    /// Tag the snapshot.
    #[arg(long)]
    pub tag: Vec<String>,
    /// Take unchanged files from this snapshot instead of the newest matching one.
    #[arg(long, conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Stay on the file system of each path.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Reader and encoder threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// zstd level for data (1 is fast; 19 is small).
    #[arg(long, default_value_t = 1)]
    pub compression_level: i32,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (a unique prefix will do) or `latest`.
    pub snapshot: String,
    /// Directory to restore files into.
    #[arg(long, required_unless_present_any = ["pg_target", "pg_datadir", "redis_datadir", "redis_target"])]
    pub to: Option<PathBuf>,
    /// Directory to write a Redis snapshot's dump.rdb into.
    #[arg(long, conflicts_with_all = ["to", "pg_target", "pg_datadir", "redis_target"])]
    pub redis_datadir: Option<PathBuf>,
    /// Live Redis server (redis[s]://...) to restore a keys snapshot into;
    /// the user needs RESTORE, TIME and INFO.
    #[arg(long, conflicts_with_all = ["to", "pg_target", "pg_datadir"], hide_env_values = true)]
    pub redis_target: Option<String>,
    /// Overwrite keys the target already holds (default: keep them).
    #[arg(long, requires = "redis_target")]
    pub replace: bool,
    /// TTL rules to apply instead of those recorded in the snapshot.
    #[arg(long, requires = "redis_target")]
    pub keys_file: Option<PathBuf>,
    /// TLS files for a rediss:// target.
    #[command(flatten)]
    pub redis_tls: RedisTlsArgs,
    /// Port of the redis-server --start runs on the restored RDB.
    #[arg(long, requires = "redis_datadir", default_value_t = 6379)]
    pub redis_port: u16,
    /// PostgreSQL server to restore a logical snapshot into (its dbname is
    /// the target when one database is restored; created if absent).
    #[arg(long, conflicts_with_all = ["to", "pg_datadir"], hide_env_values = true)]
    pub pg_target: Option<String>,
    /// Database of a logical snapshot to restore (repeat; default: all).
    #[arg(long, requires = "pg_target")]
    pub database: Vec<String>,
    /// Restore roles and tablespaces first.
    #[arg(long, requires = "pg_target")]
    pub pg_globals: bool,
    /// Do not give objects their original owners.
    #[arg(long, requires = "pg_target")]
    pub no_owner: bool,
    /// Drop objects the dump recreates in a non-empty target database.
    #[arg(long, requires = "pg_target")]
    pub pg_clean: bool,
    /// Large tables loaded at once (default: the number of cores).
    #[arg(long, requires = "pg_target")]
    pub jobs: Option<usize>,
    /// Data directory to lay a physical snapshot down in, for point-in-time recovery.
    #[arg(long, conflicts_with = "to")]
    pub pg_datadir: Option<PathBuf>,
    /// Recover up to this time (RFC 3339, such as 2026-11-25T21:00:00Z).
    #[arg(long, requires = "pg_datadir", conflicts_with_all = ["lsn", "latest", "immediate"])]
    pub time: Option<String>,
    /// Recover up to this LSN (such as 0/5000028).
    #[arg(long, requires = "pg_datadir", conflicts_with_all = ["latest", "immediate"])]
    pub lsn: Option<String>,
    /// Recover all archived WAL (the default).
    #[arg(long, requires = "pg_datadir")]
    pub latest: bool,
    /// Stop as soon as the base backup is consistent; use no archived WAL.
    #[arg(long, requires = "pg_datadir")]
    pub immediate: bool,
    /// Start the restored server and wait until it is promoted (PostgreSQL) or loaded (Redis).
    #[arg(long)]
    pub start: bool,
    /// User that owns the data directory and runs the server (when run as root).
    #[arg(long, requires = "pg_datadir")]
    pub pg_user: Option<String>,
    /// Port of the started server.
    #[arg(long, requires = "pg_datadir", default_value_t = 5432)]
    pub pg_port: u16,
    /// Keep archive_mode as the backup had it (when the copy replaces the primary).
    #[arg(long, requires = "pg_datadir")]
    pub pg_keep_archiving: bool,
    /// Go on although the archived WAL has a gap before the target.
    #[arg(long, requires = "pg_datadir")]
    pub ignore_wal_gap: bool,
    /// restore_command for the server (default: this seawall with this repository).
    #[arg(long, requires = "pg_datadir")]
    pub restore_command: Option<String>,
    /// Seconds to wait for recovery to finish.
    #[arg(long, requires = "start", default_value_t = 3600)]
    pub recovery_timeout: u64,
    /// After restoring, run the checks in this file (PostgreSQL).
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Restore only these paths of the snapshot.
    #[arg(long)]
    pub include: Vec<String>,
    /// Pack ranges processed at once (default: the number of cores plus one).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read and check every pack, not only the structure.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read only part of the packs: n/t (the n-th of t fixed parts; run 1/t
    /// to t/t to read them all) or P% (a random P percent).
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<seawall_agent::engine::verify::DataSubset>,
    /// Packs read at once.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
}

/// `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... of each of the last N days.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// ... of each of the last N weeks.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... of each of the last N months.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... of each of the last N years.
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Every snapshot within this long of the newest one ("30d", "12h").
    #[arg(long, value_parser = duration_arg)]
    pub keep_within: Option<std::time::Duration>,
    /// Only snapshots carrying this tag (repeat: all of them).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Only say what would be removed.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no seawall runs).
    #[arg(long)]
    pub remove_all: bool,
}

/// `repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// What to repair.
    #[command(subcommand)]
    pub what: RepairWhat,
}

/// Repairable parts.
#[derive(Debug, Subcommand)]
pub enum RepairWhat {
    /// Rebuild the index from the packs' headers.
    Index,
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work directory (default: a new temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the generated sample in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: u64,
    /// Skip the fleet part (coordinator and two agents).
    #[arg(long)]
    pub no_fleet: bool,
}

/// A duration flag ("30d", "12h"), with the form named when it is not one.
fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    seawall_common::duration::parse(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_line_definition_is_consistent() {
        // clap checks names, groups and conflicts only when a command is
        // parsed; this checks every subcommand at once.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
