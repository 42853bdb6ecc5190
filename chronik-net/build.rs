fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chronik.proto");
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    cfg.bytes(["."]);
    // The descriptors gRPC server reflection serves (grpcurl, Postman and
    // other generic clients list and describe the services from them).
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("chronik_descriptor.bin");
    tonic_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_protos_with_config(cfg, &["proto/chronik.proto"], &["proto"])?;
    Ok(())
}
