//! Compiles the node-level gRPC services (logs, debug) of the actors crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .compile_protos(&["proto/capstan/node/v1/node.proto"], &["proto"])?;
    Ok(())
}
