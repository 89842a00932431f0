//! `client`: encrypt and decrypt images through the cluster (or in this process), print the
//! cluster's status, run the seed's `client ID N`, and stress-test a running cluster. The flags
//! and commands are [`imgcloud::client::cli`].

use std::process::ExitCode;

use clap::Parser;
use imgcloud::client::cli::{main as run, ClientArgs};

fn main() -> ExitCode {
    run(ClientArgs::parse())
}
