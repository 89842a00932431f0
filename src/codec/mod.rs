//! The codec: pure, synchronous, no I/O. An image goes in with its access metadata and a
//! cover, a PNG comes out that looks like the cover; the right key gets both back.
//!
//! How the parts fit. [`metadata`] checks and holds who owns an image and who may view it.
//! [`seal`] derives the key from the cluster secret and seals metadata plus image behind a
//! 48-byte header (authenticated encryption). [`stego`] hides the sealed payload in the low
//! bits of a cover's samples and writes the PNG, or finds and opens a payload again.
//! [`cover`] paints the default cover (a procedural landscape) and caches it by size.
//!
//! Implementation caveats: decoding trusts no input (sizes and dimensions are bounded before
//! any allocation); the cover cache is bounded and per process.

pub mod cover;
pub mod metadata;
pub mod seal;
pub mod stego;
