//! Generates the `capstan.raft.v1` peer service (tonic server and client) and the servers of the
//! vendored etcd v3 client API (`etcdserverpb`, `mvccpb`) from `proto/`.

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
    Ok(())
}
