//! `demo`: the whole imgcloud system on this machine, on embedded defaults (see `--help`).

use clap::Parser;
use imgcloud::bench::demo::{DemoArgs, DemoCommand};
use imgcloud::node::cli::run_node;
use imgcloud::setup::init_logging;

fn main() {
    let mut args = DemoArgs::parse();
    match args.command.take() {
        Some(DemoCommand::Node(node)) => {
            init_logging();
            if let Err(e) = run_node(node) {
                eprintln!("demo node: {e}");
                std::process::exit(1);
            }
            return;
        }
        Some(DemoCommand::Peer(peer)) => {
            init_logging();
            if let Err(e) = imgcloud::peer::cli::main(peer) {
                eprintln!("peer: {e}");
                std::process::exit(1);
            }
            return;
        }
        None => {}
    }
    let runtime = match imgcloud::setup::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // Ctrl-C drops the demo's future, which stops every node it started.
    let code = runtime.block_on(async {
        tokio::select! {
            result = imgcloud::bench::demo::run(args) => match result {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("demo: {e}");
                    1
                }
            },
            _ = imgcloud::setup::shutdown_signal() => {
                eprintln!("demo: interrupted; stopping the nodes");
                130
            }
        }
    });
    drop(runtime);
    std::process::exit(code);
}
