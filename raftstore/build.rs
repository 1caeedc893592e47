//! Generates the `capstan.raft.v1` peer service (tonic server and client) from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/capstan/raft/v1/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
