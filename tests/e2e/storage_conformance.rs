//! One conformance suite for every storage backend: the local directory,
//! s3s-fs and moto's S3 server, through the same trait.

use crate::fixtures::{S3Kind, S3Server};
use bytes::Bytes;
use seawall_common::storage::{self, FileKind, S3Options, Storage};
use seawall_common::ErrorKind;
use std::sync::Arc;

async fn suite(s: Arc<dyn Storage>) {
    s.create().await.unwrap();
    assert_eq!(s.size(FileKind::Config, "").await.unwrap(), None);
    assert!(s.list(FileKind::Index).await.unwrap().is_empty());

    s.write(FileKind::Config, "", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(&s.read(FileKind::Config, "").await.unwrap()[..], b"{}");
    assert_eq!(s.list(FileKind::Config).await.unwrap().len(), 1);

    let pack = "ab".repeat(32);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s.write(FileKind::Pack, &pack, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(s.size(FileKind::Pack, &pack).await.unwrap(), Some(100_000));
    assert_eq!(
        &s.read_range(FileKind::Pack, &pack, 1000, 10).await.unwrap()[..],
        &data[1000..1010]
    );
    let listed = s.list(FileKind::Pack).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, pack);
    assert_eq!(listed[0].size, 100_000);

    // Replacing is atomic and complete.
    s.write(FileKind::Pack, &pack, Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert_eq!(&s.read(FileKind::Pack, &pack).await.unwrap()[..], b"short");

    // Large objects (multipart on S3) come back whole.
    let big: Vec<u8> = (0..40 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.write(FileKind::Pack, &"cd".repeat(32), Bytes::from(big.clone()))
        .await
        .unwrap();
    let back = s.read(FileKind::Pack, &"cd".repeat(32)).await.unwrap();
    assert!(
        back[..] == big[..],
        "large object differs after the round trip"
    );

    for i in 0..5 {
        s.write(
            FileKind::Snapshot,
            &format!("{i:064}"),
            Bytes::from(vec![i as u8; i]),
        )
        .await
        .unwrap();
    }
    let mut snaps: Vec<_> = s
        .list(FileKind::Snapshot)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 5);
    assert_eq!(snaps[3], (format!("{:064}", 3), 3));
    s.write(
        FileKind::Wal,
        "00000001/000000010000000000000001",
        Bytes::from_static(b"wal"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.list(FileKind::Wal).await.unwrap()[0].name,
        "00000001/000000010000000000000001"
    );

    let missing = s.read(FileKind::Index, &"ee".repeat(32)).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let past_end = s
        .read_range(FileKind::Snapshot, &format!("{:064}", 3), 2, 10)
        .await;
    assert!(past_end.is_err(), "reading past the end must fail");

    s.remove(FileKind::Snapshot, &format!("{:064}", 0))
        .await
        .unwrap();
    s.remove(FileKind::Snapshot, &format!("{:064}", 0))
        .await
        .unwrap();
    assert_eq!(s.list(FileKind::Snapshot).await.unwrap().len(), 4);
    assert_eq!(
        s.size(FileKind::Snapshot, &format!("{:064}", 0))
            .await
            .unwrap(),
        None
    );

    // A file larger than its kind may be is refused from its size, by
    // every backend, naming the file and the limit.
    let max = FileKind::Lock.max_size();
    s.write(
        FileKind::Lock,
        "oversized",
        bytes::Bytes::from(vec![b'x'; max as usize + 1]),
    )
    .await
    .unwrap();
    let err = s.read(FileKind::Lock, "oversized").await.unwrap_err();
    assert_eq!(err.kind(), seawall_common::ErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("locks/oversized") && text.contains(&max.to_string()),
        "{text}"
    );
    s.remove(FileKind::Lock, "oversized").await.unwrap();
}

fn s3_opts(server: &S3Server, sse: Option<&str>) -> S3Options {
    for (k, v) in server.env() {
        if k.starts_with("AWS_") {
            // Credentials reach the SDK through its standard environment, as in production.
            std::env::set_var(k, v);
        }
    }
    S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        sse: sse.map(str::to_string),
        attempts: Some(2),
        ..S3Options::default()
    }
}

#[tokio::test]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    suite(
        storage::open(
            &dir.path().join("repo").display().to_string(),
            &S3Options::default(),
        )
        .await
        .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn s3s_fs_conforms() {
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("conformance").await;
    let s = storage::open("s3://conformance/some/prefix", &s3_opts(&server, None))
        .await
        .unwrap();
    suite(s).await;
}

#[tokio::test]
async fn moto_conforms_and_gets_the_encryption_header() {
    let server = S3Server::start(S3Kind::Moto);
    server.create_bucket("sse").await;
    let s = storage::open("s3://sse/r", &s3_opts(&server, Some("AES256")))
        .await
        .unwrap();
    suite(s.clone()).await;
    s.write(FileKind::Index, &"01".repeat(32), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let head = server
        .client()
        .await
        .head_object()
        .bucket("sse")
        .key(format!("r/index/{}", "01".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256),
        "objects must be stored with the requested server-side encryption"
    );
}

#[tokio::test]
async fn missing_bucket_and_dead_endpoint_are_clear() {
    let server = S3Server::start(S3Kind::S3sFs);
    let s = storage::open("s3://no-such-bucket/x", &s3_opts(&server, None))
        .await
        .unwrap();
    let err = s.create().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Io),
        "{err}"
    );
    let dead = S3Options {
        endpoint: Some(format!("http://127.0.0.1:{}", crate::fixtures::free_port())),
        ..s3_opts(&server, None)
    };
    let s = storage::open("s3://b/x", &dead).await.unwrap();
    let err = s.read(FileKind::Config, "").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(
        err.to_string().contains("cannot reach S3 endpoint"),
        "{err}"
    );
}
