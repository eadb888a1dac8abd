//! Compiles `proto/raftlog.proto` with the protoc shipped in `protoc-bin-vendored`,
//! so a fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    tonic_build::configure()
        // Payloads decode as `bytes::Bytes`: no per-entry copies.
        .bytes(["."])
        .compile_protos(&["proto/raftlog.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/raftlog.proto");
    Ok(())
}
