//! The `demo` binary (not implemented yet).

fn main() {
    eprintln!("demo: not implemented yet");
    std::process::exit(2);
}
