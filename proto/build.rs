//! Generates the gRPC code from `seawall/v1/*.proto`, and the descriptor set
//! that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        // Replication reports are kept in the store and printed by
        // `seawall replication --json` as they are.
        .type_attribute(
            ".seawall.v1.ServiceReplication",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.StoreReplication",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.PostgresReplication",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.PostgresStandby",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.RedisReplication",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.RedisReplicaSeen",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.RepositoryReplication",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.SourceHead",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.ManagedStore",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".seawall.v1.RepositoryGap",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(
            ".seawall.v1.Failover",
            // A record written before a field existed still reads.
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".seawall.v1.FailoverStep",
            // A record written before a field existed still reads.
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".seawall.v1.Drill",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .type_attribute(
            ".seawall.v1.FailoverPlan",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        // Evidence in a stable order in the journal.
        .btree_map(".seawall.v1.FailoverStep.evidence")
        .btree_map(".seawall.v1.Drill.steady_state")
        .btree_map(".seawall.v1.DrillPhase.evidence")
        .file_descriptor_set_path(out.join("seawall_v1_descriptor.bin"))
        .compile_protos(
            &[
                "seawall/v1/operation.proto",
                "seawall/v1/probe.proto",
                "seawall/v1/action.proto",
                "seawall/v1/agent.proto",
                "seawall/v1/operator.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=seawall");
    Ok(())
}
