//! Compiles the public API's protocol with the vendored protoc: building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes([".orch.api.v1.Object.json", ".orch.api.v1.SnapshotChunk.data"]);
    tonic_prost_build::configure().compile_with_config(config, &["proto/api.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/api.proto");
    Ok(())
}
