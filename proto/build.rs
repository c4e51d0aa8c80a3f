//! Generates the gRPC code from `seawall/v1/*.proto`, and the descriptor set
//! that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out.join("seawall_v1_descriptor.bin"))
        .compile_protos(
            &[
                "seawall/v1/operation.proto",
                "seawall/v1/agent.proto",
                "seawall/v1/operator.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=seawall");
    Ok(())
}
