//! Compiles `proto/streamhouse.proto` with protox (pure Rust, no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/streamhouse.proto");
    let fds = protox::compile(["proto/streamhouse.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
