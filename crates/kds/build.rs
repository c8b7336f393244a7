//! Compiles proto/kds.proto with protox (pure Rust, no system protoc).
//! Envoy and google.protobuf types come from envoy-types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
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
