//! The `cloud-node` binary (not implemented yet).

fn main() {
    eprintln!("cloud-node: not implemented yet");
    std::process::exit(2);
}
