//! Running a replica: the gRPC server (mutual TLS, the agent stream, the
//! operator API, health checking, reflection), the Prometheus endpoint,
//! and the leadership loop: campaign, lead (scheduler and dispatcher) until
//! the lease is lost, step down, campaign again.

pub mod metrics;

use crate::api::agents::AgentApi;
use crate::api::operator::OperatorApi;
use crate::jobs::Coordinator;
use crate::model::config::CoordinatorConfig;
use crate::model::config::EtcdConfig;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::{EtcdAccess, EtcdStore};
use crate::store::StateStore;
use crate::transport::gate::Gate;
use crate::transport::listener::{fitted_cap, incoming, raise_open_files, Limits};
use crate::transport::server_tls::ServerTls;
use seawall_common::tls::{Identity, TlsPem};
use seawall_proto::codec::TRANSPORT_LIMIT;
use seawall_proto::v1::agent_service_server::AgentServiceServer;
use seawall_proto::v1::operator_service_server::OperatorServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

/// Streams one connection may have open at once (an agent uses one).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Largest header block accepted.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Body bytes buffered per stream before the client must wait.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Body bytes buffered per connection before the client must wait.
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Opens the store the configuration names.
pub async fn open_store(
    config: &CoordinatorConfig,
    dev: bool,
) -> anyhow::Result<Arc<dyn StateStore>> {
    if dev {
        let path = config
            .dev
            .as_ref()
            .map(|d| d.state.clone())
            .unwrap_or_else(|| "seawall-coordinator.redb".into());
        return Ok(Arc::new(EmbeddedStore::open(&path)?));
    }
    let Some(etcd) = &config.etcd else {
        anyhow::bail!("the configuration has no [etcd] section: add one, or run with --dev for the embedded store");
    };
    let access = etcd_access(etcd)?;
    Ok(Arc::new(
        EtcdStore::connect_with(&etcd.endpoints, &etcd.prefix, etcd.lease_ttl, access).await?,
    ))
}

/// Reads the files `[etcd]` names for TLS and etcd's users.
fn etcd_access(etcd: &EtcdConfig) -> anyhow::Result<EtcdAccess> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the [etcd] {what} {}: {e}", path.display()))
    };
    let ca = etcd.ca.as_deref().map(|p| read(p, "ca")).transpose()?;
    let identity = match (&etcd.cert, &etcd.key) {
        (Some(cert), Some(key)) => {
            let key = seawall_common::secret::read_secret_file(key, "[etcd] key")?;
            Some((read(cert, "cert")?, key))
        }
        _ => None,
    };
    let user = match (&etcd.user, &etcd.password_file) {
        (Some(user), Some(file)) => {
            let bytes = seawall_common::secret::read_secret_file(file, "[etcd] password_file")?;
            let password = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", file.display()))?;
            Some((
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        _ => None,
    };
    Ok(EtcdAccess { ca, identity, user })
}

/// The operator token, when the configuration names a file for it.
pub fn read_token(config: &CoordinatorConfig) -> anyhow::Result<Option<String>> {
    let Some(path) = &config.operator_token_file else {
        return Ok(None);
    };
    // The same owner-only rule as password files: a token others can read
    // is a token others can use.
    let bytes = seawall_common::secret::read_secret_file(path, "operator_token_file")?;
    let token = String::from_utf8_lossy(&bytes).trim().to_string();
    if token.len() < 16 {
        anyhow::bail!(
            "the operator token in {} is shorter than 16 characters: use a long random one",
            path.display()
        );
    }
    Ok(Some(token))
}

/// Loads the replica's certificate and checks it names this replica: the
/// audit log and the election name replicas by it.
pub fn load_identity(config: &CoordinatorConfig) -> anyhow::Result<TlsPem> {
    let pem = config.tls.load()?;
    match &pem.identity {
        Identity::Coordinator { name } if *name == config.id => Ok(pem),
        other => anyhow::bail!(
            "{} is the certificate of {other}, but this replica is coordinator {}: issue one with `seawall certs coordinator --name {}`",
            config.tls.cert.display(),
            config.id,
            config.id
        ),
    }
}

/// Runs the replica until `shutdown` resolves.
pub async fn run(
    config: CoordinatorConfig,
    dev: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Refuse a wrong certificate before connecting to anything.
    load_identity(&config)?;
    let addr = tokio::net::lookup_host(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen address {:?}: {e}", config.listen))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("listen address {:?} resolves to nothing", config.listen))?;
    if let Some(m) = &config.metrics_listen {
        metrics::serve(m)?;
    }
    metrics::leading(None);
    let token = read_token(&config)?;
    let store = open_store(&config, dev).await?;
    let coord = Arc::new(Coordinator::new(config, store, token));

    let tls = ServerTls::load(&coord.config.tls, &coord.config.id)?;
    tls.spawn_reloader(coord.root.clone());
    crate::status::server::start(coord.clone(), tls.clone()).await?;
    coord
        .revoked
        .spawn_refresher(coord.store.clone(), coord.root.clone());
    let open_files = raise_open_files();
    let limits = Limits {
        max_connections: fitted_cap(coord.config.max_connections, open_files),
        handshake_timeout: coord.config.handshake_timeout,
        max_anonymous: coord.config.max_anonymous_connections,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let incoming = incoming(listener, tls, limits, coord.root.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    health
        .set_serving::<OperatorServiceServer<OperatorApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(seawall_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| anyhow::anyhow!("reflection: {e}"))?;

    let leading = tokio::spawn(lead_loop(coord.clone()));
    let serving_coord = coord.clone();
    let shutdown = async move {
        shutdown.await;
        // Stop the leader's work before the server drains its streams.
        serving_coord.root.cancel();
    };
    tracing::info!(id = %coord.me.id, %addr, store = coord.store.kind(), max_connections = limits.max_connections, "coordinator listening");
    let agents = AgentServiceServer::new(AgentApi::new(coord.clone()))
        .max_decoding_message_size(TRANSPORT_LIMIT);
    let operators = OperatorServiceServer::new(OperatorApi::new(coord.clone()))
        .max_decoding_message_size(TRANSPORT_LIMIT);
    let served = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Bounds what one connection can make the replica hold: streams,
        // headers, and flow-control windows of buffered body.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_service(InterceptedService::new(
            agents,
            Gate::certificates(coord.revoked.clone()),
        ))
        .add_service(InterceptedService::new(
            operators,
            Gate::operators(coord.revoked.clone(), coord.operator_auth.clone()),
        ))
        // Health stays open to probes without certificates; its requests
        // are a service name.
        .add_service(health_service.max_decoding_message_size(4096))
        .add_service(InterceptedService::new(
            reflection,
            Gate::operators(coord.revoked.clone(), coord.operator_auth.clone()),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    coord.root.cancel();
    let _ = leading.await;
    // Hand leadership over at once rather than after the lease TTL.
    if let Some(lead) = coord.lead() {
        let _ = coord.store.resign(&lead.leadership).await;
    }
    coord.step_down();
    served.map_err(|e| anyhow::anyhow!("gRPC server on {addr}: {e}"))
}

/// Campaign, lead until the leadership is lost, step down, again.
pub(crate) async fn lead_loop(coord: Arc<Coordinator>) {
    let store_at = match &coord.config.etcd {
        Some(etcd) if coord.store.kind() == "etcd" => etcd.endpoints.join(","),
        _ => coord.store.kind().to_string(),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        // A follower waits here for as long as another replica leads: a
        // stop must not wait for that.
        let campaigned = tokio::select! {
            r = coord.store.campaign(&coord.me) => r,
            _ = coord.root.cancelled() => {
                tracing::info!("shutting down: stopped campaigning");
                return;
            }
        };
        let leadership = match campaigned {
            Ok(l) => {
                backoff = Duration::from_secs(1);
                l
            }
            Err(e) => {
                // The store may come back: keep serving reads and trying,
                // less often the longer it stays away.
                tracing::warn!(error = %e, store = %store_at, retry_in = ?backoff, "cannot campaign: is the state store reachable (the [etcd] endpoints)? retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = coord.root.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let epoch = leadership.fence.epoch;
        let lead = match coord.take_lead(leadership).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "state not loaded after winning; campaigning again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        metrics::leading(Some(epoch));
        tracing::info!(epoch, "leading");
        coord
            .audit(
                &lead,
                "election",
                format!("{} leads with epoch {epoch}", coord.me.id),
            )
            .await;
        crate::jobs::scheduler::start(
            coord.clone(),
            lead.clone(),
            crate::drills::schedule::slots(&coord.config),
        );
        crate::jobs::dispatch::start(coord.clone(), lead.clone());
        crate::history::start(coord.clone(), lead.clone());
        crate::replication::start(coord.clone(), lead.clone());
        crate::failover::driver::start(coord.clone(), lead.clone());
        crate::drills::worker::start(coord.clone(), lead.clone());
        crate::failover::auto::start(coord.clone(), lead.clone());
        let shutting_down = tokio::select! {
            _ = lead.leadership.lost() => false,
            _ = coord.root.cancelled() => true,
        };
        // Every worker and agent session of this term stops at its next
        // await; wait for them before acting on anything else.
        let stopped = lead.tree.stop(WORKERS_GRACE).await;
        coord.step_down();
        metrics::leading(None);
        if shutting_down {
            tracing::info!(epoch, stopped, "shutting down: leader work stopped");
            return;
        }
        tracing::warn!(epoch, stopped, "leadership lost: stopped acting");
    }
}

/// How long a term's tasks get to stop once its lead is lost.
const WORKERS_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod job_tests;
