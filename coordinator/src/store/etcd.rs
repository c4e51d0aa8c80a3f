//! The etcd store. Leadership comes from the etcd election API on a lease
//! this replica keeps alive itself (the client does not), from the moment
//! it starts campaigning. The leader key's create revision is the fencing
//! epoch, and every write is a transaction comparing it, so a write from a
//! replica whose lease expired fails inside etcd. The replica does not wait
//! for that: it stops acting once its last confirmed keep-alive is older
//! than the TTL minus a margin.

use super::{Entry, Fence, LeaderInfo, Leadership, StateStore, StoreError, StoreResult};
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaderKey, PutOptions, ResignOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Failed etcd calls, by operation (the one figure this module exports).
const ETCD_ERRORS_TOTAL: &str = "seawall_etcd_errors_total";

/// How long before the lease's end a leader stops trusting it.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

/// Store on an etcd cluster.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    ttl: Duration,
    /// Leader keys held by this process, for resign.
    held: Mutex<Vec<(i64, LeaderKey)>>,
}

/// How long one etcd request (other than a campaign) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    metrics::counter!(ETCD_ERRORS_TOTAL, "op" => what.to_string()).increment(1);
    StoreError::Unavailable(format!("etcd {what}: {e}"))
}

/// Whether a request failed before reaching any member (the connection was
/// refused): safe to send again, and the balancer then picks a live member.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("tcp connect error") || text.contains("ConnectionRefused")
}

/// Runs one etcd request with the request timeout, sending it again (up to
/// four times) when a dead member refused the connection.
async fn timed<T, F, Fut>(what: &str, mut request: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match tokio::time::timeout(REQUEST_TIMEOUT, request()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if attempt < 4 && never_sent(&e) => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Ok(Err(e)) => return Err(unavailable(what, e)),
            Err(_) => return Err(unavailable(what, "no answer within 5 s")),
        }
    }
}

/// Keys per page of a listing: well under the 4 MiB response limit even
/// for records of several KiB.
const LIST_PAGE: i64 = 256;

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's convention: the prefix with its last byte below 0xff raised).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// How this replica proves itself to etcd and checks etcd's members:
/// TLS (the members' CA, and a client certificate when etcd runs with
/// `--client-cert-auth`), and etcd's own users.
#[derive(Default)]
pub struct EtcdAccess {
    /// The CA that signed the members' certificates, PEM.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// User name and password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("tls", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` in plain text with no credentials (tests);
    /// keys live under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str, ttl: Duration) -> StoreResult<Self> {
        Self::connect_with(endpoints, prefix, ttl, EtcdAccess::default()).await
    }

    /// Connects to `endpoints` with `access`; keys live under `prefix`.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        ttl: Duration,
        access: EtcdAccess,
    ) -> StoreResult<Self> {
        // No request timeout on the client: a campaign waits as long as
        // another replica leads. Other calls are bounded by `timed`. HTTP/2
        // pings no more often than etcd's --grpc-keepalive-min-time (5 s),
        // or etcd closes the connection for too many pings.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(ca) = access.ca {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca));
            if let Some((cert, key)) = access.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = access.user {
            options = options.with_user(user, password);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| unavailable(&format!("connect to {}", endpoints.join(",")), e))?;
        Ok(EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            ttl,
            held: Mutex::new(Vec::new()),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{}", self.prefix, key)
    }

    /// A listed key and value, its key without this store's prefix.
    fn entry(&self, kv: &etcd_client::KeyValue) -> Entry {
        let strip = (self.prefix.len() + 1).min(kv.key().len());
        Entry {
            key: String::from_utf8_lossy(&kv.key()[strip..]).into_owned(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }
    }

    fn election(&self) -> String {
        self.full("election")
    }

    fn fenced_txn(&self, fence: &Fence) -> Compare {
        Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.epoch)
    }

    /// Sends a transaction, retried as [`timed`] retries.
    async fn send(&self, txn: Txn) -> StoreResult<TxnResponse> {
        let c = self.client.clone();
        timed("txn", || {
            let (mut c, txn) = (c.clone(), txn.clone());
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Runs `op` if the fence holds; returns the new revision.
    async fn fenced(&self, fence: &Fence, op: TxnOp) -> StoreResult<i64> {
        let txn = Txn::new()
            .when(vec![self.fenced_txn(fence)])
            .and_then(vec![op]);
        let resp = self.send(txn).await?;
        if resp.succeeded() {
            Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
        } else {
            Err(StoreError::Fenced { epoch: fence.epoch })
        }
    }

    /// Grants a lease and keeps it alive until it is lost; returns its id
    /// and the signals of a [`Leadership`].
    async fn start_lease(
        &self,
    ) -> StoreResult<(i64, watch::Receiver<bool>, watch::Receiver<Instant>)> {
        let ttl_secs = self.ttl.as_secs().max(2) as i64;
        let client = self.client.clone();
        let sent = Instant::now();
        let grant = timed("lease grant", || {
            let mut c = client.clone();
            async move { c.lease_grant(ttl_secs, None).await }
        })
        .await?;
        let id = grant.id();
        let (mut keeper, mut stream) = timed("lease keep-alive", || {
            let mut c = client.clone();
            async move { c.lease_keep_alive(id).await }
        })
        .await?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let first = sent + Duration::from_secs(grant.ttl().max(0) as u64);
        let (deadline_tx, deadline_rx) =
            watch::channel(first.checked_sub(SAFETY_MARGIN).unwrap_or(sent));
        let every = self.ttl / 3;
        tokio::spawn(async move {
            let mut pause = every;
            loop {
                tokio::time::sleep(pause).await;
                pause = every;
                if lost_tx.is_closed() {
                    // Nobody holds the leadership any more: let the lease end.
                    return;
                }
                let sent = Instant::now();
                let answer = tokio::time::timeout(every, async {
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        let until = sent + Duration::from_secs(r.ttl() as u64);
                        let _ = deadline_tx.send(until.checked_sub(SAFETY_MARGIN).unwrap_or(sent));
                    }
                    Ok(Ok(Some(_))) => {
                        // TTL 0: etcd says the lease is gone.
                        tracing::warn!(lease = id, "etcd lease expired");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            Ok(Ok(None)) => "keep-alive stream closed".to_string(),
                            _ => "no answer".to_string(),
                        };
                        metrics::counter!(ETCD_ERRORS_TOTAL, "op" => "keepalive").increment(1);
                        tracing::warn!(lease = id, %why, "etcd lease keep-alive failed");
                        if Instant::now() >= *deadline_tx.borrow() {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        // Re-open the keep-alive stream (the balancer picks a
                        // live member) and try again soon, not a period later.
                        pause = Duration::from_millis(100);
                        let reopened = timed("lease keep-alive", || {
                            let mut c = client.clone();
                            async move { c.lease_keep_alive(id).await }
                        })
                        .await;
                        match reopened {
                            Ok((k, s)) => {
                                keeper = k;
                                stream = s;
                            }
                            Err(e) => {
                                tracing::warn!(lease = id, error = %e, "re-opening keep-alive failed")
                            }
                        }
                    }
                }
            }
        });
        Ok((id, lost_rx, deadline_rx))
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        let c = self.client.clone();
        let full = self.full(key);
        let resp = timed("get", || {
            let (mut c, full) = (c.clone(), full.clone());
            async move { c.get(full, None).await }
        })
        .await?;
        Ok(resp.kvs().first().map(|kv| Entry {
            key: key.to_string(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }))
    }

    async fn list_newest(
        &self,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let full = self.full(prefix).into_bytes();
        let end = match before {
            Some(b) if b.starts_with(prefix) => self.full(b).into_bytes(),
            _ => prefix_end(&full),
        };
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(limit.min(LIST_PAGE as usize) as i64)
            .with_sort(SortTarget::Key, SortOrder::Descend);
        let resp = timed("list", || {
            let (mut c, from, options) = (self.client.clone(), full.clone(), options.clone());
            async move { c.get(from, Some(options)).await }
        })
        .await?;
        Ok(resp.kvs().iter().map(|kv| self.entry(kv)).collect())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        // In pages, all at the first page's revision: one response holding a
        // whole prefix outgrows the client's 4 MiB message limit once the
        // history does (some 5,000 job records), and then no replica could
        // take the lead or prune that history.
        let full = self.full(prefix).into_bytes();
        let end = prefix_end(&full);
        let mut out = Vec::new();
        let mut from = full;
        let mut at_revision = 0;
        loop {
            let c = self.client.clone();
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE)
                .with_revision(at_revision);
            let resp = timed("list", || {
                let (mut c, from, options) = (c.clone(), from.clone(), options.clone());
                async move { c.get(from, Some(options)).await }
            })
            .await?;
            if at_revision == 0 {
                at_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = resp.kvs();
            out.extend(kvs.iter().map(|kv| self.entry(kv)));
            match kvs.last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn put_with(
        &self,
        fence: &Fence,
        key: &str,
        value: &[u8],
        expected: Option<i64>,
        extra: &[(String, Vec<u8>)],
    ) -> StoreResult<i64> {
        let full = self.full(key);
        let mut when = vec![self.fenced_txn(fence)];
        if let Some(rev) = expected {
            when.push(Compare::mod_revision(full.clone(), CompareOp::Equal, rev));
        }
        let mut writes = vec![TxnOp::put(full.clone(), value.to_vec(), None)];
        writes.extend(
            extra
                .iter()
                .map(|(k, v)| TxnOp::put(self.full(k), v.clone(), None)),
        );
        let txn = Txn::new().when(when).and_then(writes).or_else(vec![
            TxnOp::get(fence.key.clone(), None),
            TxnOp::get(full.clone(), None),
        ]);
        let resp = self.send(txn).await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or_default());
        }
        let ops = resp.op_responses();
        let revision_of = |i: usize, create: bool| -> i64 {
            match ops.get(i) {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .first()
                    .map(|kv| {
                        if create {
                            kv.create_revision()
                        } else {
                            kv.mod_revision()
                        }
                    })
                    .unwrap_or(0),
                _ => 0,
            }
        };
        if revision_of(0, true) != fence.epoch {
            return Err(StoreError::Fenced { epoch: fence.epoch });
        }
        Err(StoreError::Conflict {
            key: key.to_string(),
            expected: expected.unwrap_or(0),
            found: revision_of(1, false),
        })
    }

    async fn put_bound(&self, fence: &Fence, key: &str, value: &[u8]) -> StoreResult<i64> {
        let options = PutOptions::new().with_lease(fence.lease);
        self.fenced(
            fence,
            TxnOp::put(self.full(key), value.to_vec(), Some(options)),
        )
        .await
    }

    async fn delete(&self, fence: &Fence, key: &str) -> StoreResult<()> {
        self.fenced(fence, TxnOp::delete(self.full(key), None))
            .await
            .map(|_| ())
    }

    async fn campaign(&self, me: &LeaderInfo) -> StoreResult<Leadership> {
        loop {
            let (lease, lost, deadline) = self.start_lease().await?;
            let value = serde_json::to_vec(me).map_err(|e| unavailable("encode", e))?;
            let mut c = self.client.clone();
            let mut watch_lost = lost.clone();
            // Campaign blocks while another replica leads; the lease is kept
            // alive meanwhile, and a lost lease starts the campaign over.
            let campaign = c.campaign(self.election(), value, lease);
            let won = tokio::select! {
                r = campaign => match r {
                    Ok(won) => won,
                    Err(e) => {
                        // A member went away mid-campaign: campaign again on a fresh lease.
                        tracing::warn!(error = %unavailable("campaign", e), "campaign interrupted; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
                _ = async { while !*watch_lost.borrow() { if watch_lost.changed().await.is_err() { break } } } => {
                    tracing::warn!("lease lost while campaigning; campaigning again");
                    continue;
                }
            };
            let Some(key) = won.leader().cloned() else {
                return Err(unavailable("campaign", "no leader key in the answer"));
            };
            let fence = Fence {
                key: key.key().to_vec(),
                epoch: key.rev(),
                lease,
            };
            if let Ok(mut held) = self.held.lock() {
                held.push((key.rev(), key));
            }
            return Ok(Leadership::new(fence, lost, deadline));
        }
    }

    async fn resign(&self, leadership: &Leadership) -> StoreResult<()> {
        let key = self.held.lock().ok().and_then(|mut held| {
            let at = held
                .iter()
                .position(|(rev, _)| *rev == leadership.fence.epoch)?;
            Some(held.remove(at).1)
        });
        if let Some(key) = key {
            let c = self.client.clone();
            timed("resign", || {
                let (mut c, key) = (c.clone(), key.clone());
                async move { c.resign(Some(ResignOptions::new().with_leader(key))).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn leader(&self) -> StoreResult<Option<LeaderInfo>> {
        let mut c = self.client.clone();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, c.leader(self.election()))
            .await
            .map_err(|_| unavailable("leader", "no answer within 5 s"))?;
        match answer {
            Ok(resp) => Ok(resp.kv().and_then(|kv| {
                let mut info: LeaderInfo = serde_json::from_slice(kv.value()).ok()?;
                info.epoch = kv.create_revision();
                Some(info)
            })),
            // etcd answers "election: no leader" as an error.
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(unavailable("leader", e)),
        }
    }

    fn lease_ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_range_of_a_prefix_ends_just_past_it() {
        assert_eq!(prefix_end(b"/seawall/jobs/"), b"/seawall/jobs0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
