//! `chaos SCENARIO...`: real faults against real node processes under a stress load, one line
//! per scenario; exits non-zero if any scenario failed.

use clap::Parser;
use imgcloud::bench::chaos::{run, ChaosArgs};
use imgcloud::setup::init_logging;

fn main() {
    init_logging();
    let args = ChaosArgs::parse();
    let runtime = match imgcloud::setup::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    }
}
