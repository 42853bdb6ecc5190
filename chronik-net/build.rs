fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chronik.proto");
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    cfg.bytes(["."]);
    tonic_build::configure().compile_protos_with_config(
        cfg,
        &["proto/chronik.proto"],
        &["proto"],
    )?;
    Ok(())
}
