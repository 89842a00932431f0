//! Arbitrary bytes as the cover of a small fixed secret: an error or a PNG that reveals the
//! secret again, never a panic, an abort or an allocation far beyond the input.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use imgcloud::codec::metadata::{ImageMeta, Viewer};
use imgcloud::codec::seal::SealKey;
use imgcloud::codec::stego::{decrypt_image, encrypt_image, Cover};
use libfuzzer_sys::fuzz_target;

struct Fixed {
    key: SealKey,
    meta: ImageMeta,
    secret: Vec<u8>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
        let mut secret = Vec::new();
        img.write_to(&mut Cursor::new(&mut secret), image::ImageFormat::Png)
            .expect("a 4x3 PNG encodes");
        let viewers = vec![Viewer { name: "bob".into(), quota: 3 }];
        Fixed {
            key: SealKey::from_secret(b"fuzz"),
            meta: ImageMeta::new("alice", viewers).expect("valid metadata"),
            secret,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    if let Ok(png) = encrypt_image(&f.secret, Cover::Image(data), &f.meta, &f.key) {
        let (meta, secret) = decrypt_image(&png, &f.key).expect("a hidden secret reveals");
        assert_eq!(meta, f.meta);
        assert_eq!(secret, f.secret);
    }
});
