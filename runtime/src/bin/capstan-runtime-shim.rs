//! Stand-alone shim executable for the runtime crate's own tests: `capstan-runtime-shim shim
//! <args>` behaves like `capstan shim <args>`.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let code = match args.next() {
        Some(verb) if verb == "shim" => runtime::shim_main(args.collect()),
        _ => {
            eprintln!("usage: capstan-runtime-shim shim <run|cleanup> --root <dir> --id <id>");
            2
        }
    };
    std::process::exit(code);
}
