//! Generates the `capstan.raft.v1` peer service (tonic server and client) and the servers of the
//! vendored etcd v3 client API (`etcdserverpb`, `mvccpb`) from `proto/`, plus clients of the
//! latter for the benchmark binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/capstan/raft/v1/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto], &["proto"])?;
    let etcd = [
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/mvccpb/kv.proto",
    ];
    for p in etcd {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(&etcd, &["proto"])?;
    // Clients for the same protos, in their own directory so the library does not compile them:
    // only the `raftstore-bench` binary includes them, to drive raftstore and etcd alike.
    let client_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("etcd-client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(client_dir)
        .compile_protos(&etcd, &["proto"])?;
    Ok(())
}
