//! Arbitrary bytes as an image to reveal, with a fixed key: an error or a payload, never a
//! panic, an abort or an allocation far beyond the input.
#![no_main]

use std::sync::OnceLock;

use imgcloud::codec::seal::SealKey;
use imgcloud::codec::stego::decrypt_image;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static SealKey {
    static KEY: OnceLock<SealKey> = OnceLock::new();
    KEY.get_or_init(|| SealKey::from_secret(b"fuzz"))
}

fuzz_target!(|data: &[u8]| {
    let _ = decrypt_image(data, key());
});
