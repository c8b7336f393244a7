//! Compiles proto/kds.proto with protox (pure Rust, no system protoc).
//! Envoy and google.protobuf types come from envoy-types.
//!
//! Also compiles the wire schemas of Kuma's protobuf ("legacy") kinds under
//! proto/kuma/ into a FileDescriptorSet in OUT_DIR, which `legacy.rs` loads
//! with prost-reflect to convert our JSON to Kuma's protobuf and back.

/// The legacy kinds' schemas, relative to `proto/`.
const LEGACY_PROTOS: &[&str] = &[
    "kuma/mesh/v1alpha1/mesh.proto",
    "kuma/mesh/v1alpha1/dataplane.proto",
    "kuma/mesh/v1alpha1/dataplane_insight.proto",
    "kuma/mesh/v1alpha1/service_insight.proto",
    "kuma/system/v1alpha1/secret.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let legacy = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(LEGACY_PROTOS)?
        .encode_file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("kuma_legacy.fds"), legacy)?;

    let fds = protox::compile(["kds.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(
            ".envoy.service.discovery.v3",
            "::envoy_types::pb::envoy::service::discovery::v3",
        )
        .extern_path(
            ".google.protobuf.Any",
            "::envoy_types::pb::google::protobuf::Any",
        )
        .extern_path(
            ".google.protobuf.Duration",
            "::envoy_types::pb::google::protobuf::Duration",
        )
        .compile_fds(fds)?;
    Ok(())
}
