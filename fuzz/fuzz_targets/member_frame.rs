//! Arbitrary bytes as a member or client frame: every decoder a node runs on what a socket gave it.
//! A frame must decode or fail with an error, never panic, and never allocate from a declared
//! length more than the frame itself could hold.
#![no_main]

use imgcloud::wire::framing::{decode, decode_envelope, encode};
use imgcloud::wire::handshake::Hello;
use imgcloud::wire::request::{EncryptReply, EncryptRequest};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` as `T`; whatever decodes must encode again and decode to the same value.
fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode::<T>(data) {
        let bytes = encode(&value).expect("a decoded value encodes");
        assert_eq!(decode::<T>(&bytes).expect("re-encoded value decodes"), value);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode_envelope(data) {
        // Loads are f64 (NaN != NaN), so only check that the value encodes and decodes again.
        let bytes = encode(&envelope).expect("a decoded envelope encodes");
        decode_envelope(&bytes).expect("a re-encoded envelope decodes");
    }
    round_trip::<Hello>(data);
    round_trip::<EncryptRequest>(data);
    round_trip::<EncryptReply>(data);
});
