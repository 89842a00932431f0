//! The `client` binary (not implemented yet).

fn main() {
    eprintln!("client: not implemented yet");
    std::process::exit(2);
}
