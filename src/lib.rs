//! # imgcloud
//!
//! A fault-tolerant, load-balanced cloud for controlled sharing of images.
//!
//! Users send an image to the cloud to be "encrypted": a node hides it inside a cover picture
//! by LSB steganography, together with its owner and the viewers allowed to see it (each with a
//! view quota), sealed with authenticated encryption.
//!
//! ## Layout
//! - [`error`]: the one error type.
//! - [`metadata`]: owner, viewers with view quotas, image id and format version hidden with an image.
//! - [`seal`]: key derivation from the cluster secret, the payload header, and authenticated encryption.
//! - [`stego`]: hiding a sealed payload in a cover's low bits (PNG out) and revealing it.
//! - [`cover`]: the default procedural landscape cover and its cache.
//! - [`metrics`]: stress-test samples, whole-run figures, per-second timeline, confidence intervals.
//! - [`report`]: the stress-test report as JSON and as the console summary, and trial combination.
//! - [`plot`]: the stress-test PNG: throughput, latency and per-node load over time, failures shaded.
//! - [`chaos`]: real faults (kill, stop, restarts, a partition) against node processes under load.

pub mod cover;
pub mod error;
pub mod metadata;
pub mod seal;
pub mod stego;

pub use error::{Error, Result};
pub mod client;
pub mod config;
pub mod connection;
pub mod detector;
pub mod dispatch;
pub mod handshake;
pub mod http;
pub mod message;
pub mod metrics;
pub mod node;
pub mod plot;
pub mod pool;
pub mod report;
pub mod request;
pub mod server;
pub mod state;

/// The built-in test image (an 80x54 photo, about 9 KB of PNG) that `client ID N`, the stress
/// test and the demo send when given no image of their own.
pub const SAMPLE_IMAGE: &[u8] = include_bytes!("../assets/sample.png");
pub mod chaos;
pub mod cli;
pub mod demo;
pub mod launcher;
pub mod stress;
