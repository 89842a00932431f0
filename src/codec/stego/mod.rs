//! Hiding a sealed payload in the low bits of a cover image, and finding it again.
//!
//! How it works. The cover is read as one of eight sample layouts: gray, gray+alpha, RGB or
//! RGBA, each at 8 or 16 bits per sample. Other inputs are converted first: palette images
//! become RGB (or RGBA when they have transparency), 1/2/4-bit gray becomes 8-bit gray, and
//! floating-point images become 16-bit RGB(A). The "carriers" are the colour samples in raster
//! order (row by row, pixel by pixel, channel by channel), skipping alpha, which is never
//! changed. The 48-byte header ([`crate::codec::seal`]) goes into the lowest bit of the first 384
//! carriers, most significant bit first; the sealed body follows at 1 or 2 bits per carrier (the
//! header says which). For 16-bit samples the low bits of the 16-bit value are used, so the
//! output stays 16-bit. Hiding streams: a PNG cover is decoded row by row, each row gets its
//! share of the payload and goes straight to the PNG encoder, so no image-sized buffer exists
//! (other formats, and interlaced PNG, are decoded whole by the `image` crate first). The output
//! is a PNG of the cover's size and layout: fast deflate with the "Up" filter for a user's
//! cover, stored (uncompressed) rows for the default cover, which is the cluster's hot path.
//!
//! Revealing reads the PNG row by row with the `png` crate and stops as soon as the header and
//! then the body are complete, so for a large cover only its first rows are decompressed. Any
//! other lossless format the `image` crate decodes is read whole instead.
//!
//! The parts: [`input`] reads what the codec is handed, within its limits; [`carriers`] says
//! where the payload's bits sit and puts them there; [`write`] writes the PNG row by row;
//! [`reveal`] finds and opens a payload again. This file holds the API and the capacity rules.
//!
//! Implementation caveats: sequential carriers make the payload easy to find for anyone who
//! looks for it statistically (the AEAD keeps it unreadable and tamper-evident, not hidden from
//! steganalysis); the secret is decoded once on hide only to check that it is a whole image;
//! metadata such as gamma, ICC profiles and text chunks of the cover is not carried over.

mod carriers;
mod input;
mod reveal;
mod write;

use image::DynamicImage;

use crate::codec::cover::DefaultCovers;
use crate::codec::metadata::ImageMeta;
use crate::codec::seal::{encode_plaintext, SealKey, HEADER_LEN, TAG_LEN};
use crate::error::{Error, Result};
use carriers::{normalise, Embedder, RowsOf, Shape};
use input::{check_secret, png_error, png_reader, png_shape};
pub use input::{
    decode_image, image_extension, FREE_DECODED_BYTES, MAX_DECODED_BYTES, MAX_EXPANSION, MAX_SIDE,
};
pub use reveal::decrypt_image;
pub use write::PNG_FILTER;
use write::{stored_png_len, write_png, Deflate};

/// Carriers holding the header (one bit each).
pub const HEADER_SAMPLES: usize = HEADER_LEN * 8;

/// The picture the payload is hidden in.
#[derive(Clone, Copy, Debug)]
pub enum Cover<'a> {
    /// The project's default landscape, sized to fit the payload, from this cache.
    Default(&'a DefaultCovers),
    /// A user's cover: the encoded bytes of any image the `image` crate decodes.
    Image(&'a [u8]),
}

/// Tuning of [`encrypt_image_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HideOptions {
    /// Low bits per colour sample (1 or 2); `None` picks the fewest that fit.
    pub bits: Option<u8>,
    /// Write stored (uncompressed) rows whatever the cover, as the default cover always is:
    /// ten times cheaper to write and to read back, about twice the size of a photo cover's
    /// compressed output (the view path reseals a copy on every view: DESIGN.md, "Phase 2:
    /// sharing").
    pub stored: bool,
}

/// Hides the secret image and its metadata in the cover; returns the PNG bytes of the result.
pub fn encrypt_image(
    secret: &[u8],
    cover: Cover<'_>,
    meta: &ImageMeta,
    key: &SealKey,
) -> Result<Vec<u8>> {
    encrypt_image_with(secret, cover, meta, key, HideOptions::default())
}

/// [`encrypt_image`] with explicit options.
pub fn encrypt_image_with(
    secret: &[u8],
    cover: Cover<'_>,
    meta: &ImageMeta,
    key: &SealKey,
    options: HideOptions,
) -> Result<Vec<u8>> {
    if let Some(bits) = options.bits.filter(|b| !(1..=2).contains(b)) {
        return Err(Error::InvalidInput(format!(
            "{bits} bits per sample requested; use 1 or 2"
        )));
    }
    meta.validate()?;
    check_secret(secret)?;
    let plaintext = encode_plaintext(meta, secret)?;
    let body_len = plaintext.len() + TAG_LEN;
    // Seals the payload once the cover's shape is known (the header names the bits used).
    let payload = |shape: &Shape| -> Result<Embedder> {
        let bits = choose_bits(shape, body_len, options.bits)?;
        let (header, body) = key.seal(bits, plaintext)?;
        Ok(Embedder::new(shape, &header, &body, bits))
    };
    match cover {
        Cover::Default(covers) => {
            let fitting = |bits| covers.for_samples(samples_needed(body_len, bits));
            // Two bits per sample by default: the cover is ours, its low two bits are noise to
            // the eye, and a cover half the size halves the reply (DESIGN.md, "Output size").
            let painted = fitting(options.bits.unwrap_or(2));
            let painted = painted.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the payload is {body_len} bytes, larger than the largest default cover holds; give a cover"
                ))
            })?;
            let shape = Shape::new(
                painted.width(),
                painted.height(),
                png::ColorType::Rgb,
                false,
            )?;
            let embedder = payload(&shape)?;
            let mut rows = painted.as_raw().chunks_exact(shape.row_len());
            // The default cover is the cluster's hot path: stored, not compressed (DESIGN.md,
            // "Output compression").
            write_png(&shape, Deflate::Stored, embedder, |row| {
                row.copy_from_slice(rows.next().unwrap_or_default());
                Ok(())
            })
        }
        Cover::Image(bytes) => match png_reader(bytes, "cover")? {
            // Non-interlaced PNG, the usual cover: decoded row by row as it is encoded (once
            // more for a second pass).
            Some(reader) if !reader.info().interlaced => {
                let (shape, len) = (png_shape(&reader, bytes.len())?, bytes.len());
                write_smaller(&shape, payload(&shape)?, options.stored, || {
                    let mut reader = png_reader(bytes, "cover")?.ok_or_else(|| {
                        Error::NotAnImage(format!("the cover ({len} bytes) is not a PNG"))
                    })?;
                    Ok(move |row: &mut [u8]| next_png_row(&mut reader, row, len))
                })
            }
            _ => {
                let image = normalise(decode_image(bytes, "cover")?)?;
                let shape = Shape::of(&image)?;
                let row_len = shape.row_len();
                write_smaller(&shape, payload(&shape)?, options.stored, || {
                    let mut rows = RowsOf::new(&image, row_len);
                    Ok(move |row: &mut [u8]| {
                        rows.next_into(row);
                        Ok(())
                    })
                })
            }
        },
    }
}

/// Writes a user's cover with fast deflate; if deflate made it larger than stored rows would
/// be (a noise-like cover), writes it again stored. With `stored`, writes it stored at once.
/// `rows` opens the cover's rows for a pass.
fn write_smaller<F>(
    shape: &Shape,
    embedder: Embedder,
    stored: bool,
    mut rows: impl FnMut() -> Result<F>,
) -> Result<Vec<u8>>
where
    F: FnMut(&mut [u8]) -> Result<()>,
{
    if stored {
        return write_png(shape, Deflate::Stored, embedder, rows()?);
    }
    let out = write_png(shape, Deflate::Fast, embedder.clone(), rows()?)?;
    if out.len() <= stored_png_len(shape) {
        return Ok(out);
    }
    write_png(shape, Deflate::Stored, embedder, rows()?)
}

/// Copies the next row of a PNG cover into `row`.
fn next_png_row<R: std::io::BufRead + std::io::Seek>(
    reader: &mut png::Reader<R>,
    row: &mut [u8],
    file_len: usize,
) -> Result<()> {
    match reader.next_row() {
        Ok(Some(r)) => {
            row.copy_from_slice(&r.data()[..row.len()]);
            Ok(())
        }
        Ok(None) => Err(Error::Truncated(format!(
            "the cover (PNG, {file_len} bytes) ends before the image is complete"
        ))),
        Err(e) => Err(png_error(e, "cover", file_len)),
    }
}

/// Encodes an image as PNG the way hide writes user covers (fast deflate, [`PNG_FILTER`]).
pub fn encode_png(image: &DynamicImage) -> Result<Vec<u8>> {
    let shape = Shape::of(image)?;
    let mut rows = RowsOf::new(image, shape.row_len());
    write_png(&shape, Deflate::Fast, Embedder::default(), |row| {
        rows.next_into(row);
        Ok(())
    })
}

/// Carriers needed for a body of `body_len` bytes at `bits` per carrier, header included.
pub fn samples_needed(body_len: usize, bits: u8) -> u64 {
    HEADER_SAMPLES as u64 + (body_len as u64 * 8).div_ceil(u64::from(bits))
}

/// Picks the fewest bits per carrier that fit (or checks the requested ones).
fn choose_bits(shape: &Shape, body_len: usize, requested: Option<u8>) -> Result<u8> {
    let total = shape.carriers();
    let candidates: &[u8] = match requested {
        Some(1) => &[1],
        Some(_) => &[2],
        None => &[1, 2],
    };
    if let Some(&bits) = candidates
        .iter()
        .find(|&&b| samples_needed(body_len, b) <= total)
    {
        return Ok(bits);
    }
    let bits = *candidates.last().unwrap_or(&2);
    let needed = samples_needed(body_len, bits);
    let min_pixels = needed.div_ceil(shape.layout.colour as u64);
    Err(Error::CoverTooSmall {
        width: shape.width,
        height: shape.height,
        capacity: (total.saturating_sub(HEADER_SAMPLES as u64) * u64::from(bits) / 8) as usize,
        needed: body_len,
        min_pixels,
        suggest_side: (min_pixels as f64).sqrt().ceil() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    use image::ImageFormat;

    use super::carriers::{gather_1, gather_2, Layout, SPREAD_1, SPREAD_2};
    #[test]
    fn a_tiny_file_claiming_a_huge_image_is_refused_before_decoding() {
        // A 16x16 JPEG whose frame header is patched to claim 11552x4608 (160 MB of pixels).
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 200]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let mut jpeg = jpeg.into_inner();
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline frame header");
        // 160 MB of pixels (the first fuzz finding), and 10 MB (the second: 11552x288, which
        // passed the first limits and cost 0.2 s of decoding and encoding per 1.3 KB request).
        for height in [4608u16, 288] {
            jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
            jpeg[sof + 7..sof + 9].copy_from_slice(&11552u16.to_be_bytes());
            let started = std::time::Instant::now();
            let err = match decode_image(&jpeg, "cover") {
                Ok(img) => panic!(
                    "decoded a {}x{} image from {} bytes",
                    img.width(),
                    img.height(),
                    jpeg.len()
                ),
                Err(e) => e,
            };
            assert!(matches!(err, Error::Unsupported(_)), "{err}");
            assert!(err.to_string().contains("too large"), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn float_images_become_16_bit() {
        let rgb = image::Rgb32FImage::from_pixel(2, 2, image::Rgb([0.5, 1.0, 0.0]));
        let out = normalise(DynamicImage::ImageRgb32F(rgb)).unwrap();
        let DynamicImage::ImageRgb16(buf) = out else {
            panic!("expected 16-bit RGB")
        };
        assert_eq!(buf.get_pixel(0, 0).0[1], u16::MAX);
        let rgba = image::Rgba32FImage::from_pixel(1, 1, image::Rgba([0.0, 0.0, 0.0, 1.0]));
        let out = normalise(DynamicImage::ImageRgba32F(rgba)).unwrap();
        assert!(matches!(out, DynamicImage::ImageRgba16(_)));
    }

    /// A PNG of the given header whose only image data is `idat` (no IEND: it may stop early).
    fn raw_png(
        width: u32,
        height: u32,
        colour: u8,
        depth: u8,
        interlace: u8,
        idat: &[u8],
    ) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8; 4], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32fast::hash(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[depth, colour, 0, 0, interlace]);
        chunk(b"IHDR", &ihdr);
        if !idat.is_empty() {
            chunk(b"IDAT", idat);
        }
        out
    }

    #[test]
    fn png_secrets_are_checked_as_containers() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(20, 10, |x, y| {
            image::Rgb([x as u8 * 9, y as u8 * 20, 7])
        }));
        let good = encode_png(&img).unwrap();
        check_secret(&good).unwrap();
        // A flipped bit in the pixel data: the decoder might not notice, the checksum does.
        let idat = good.windows(4).position(|w| w == b"IDAT").unwrap();
        let mut flipped = good.clone();
        flipped[idat + 8] ^= 0x10;
        let e = check_secret(&flipped).unwrap_err();
        assert!(matches!(e, Error::NotAnImage(_)), "{e}");
        assert!(
            e.to_string().contains("IDAT chunk fails its checksum"),
            "{e}"
        );
        // Cut anywhere: inside a chunk, between chunks (no IEND), or right after the signature.
        for cut in [good.len() - 1, good.len() - 12, idat + 2, 8] {
            let e = check_secret(&good[..cut]).unwrap_err();
            assert!(matches!(e, Error::Truncated(_)), "cut at {cut}: {e}");
        }
        assert!(matches!(
            check_secret(&raw_png(20, 10, 2, 8, 0, b"data")),
            Err(Error::Truncated(_))
        ));
        let bad_headers = [
            (raw_png(0, 10, 2, 8, 0, b"x"), "claims 0x10 pixels"),
            (raw_png(4, 4, 2, 4, 0, b"x"), "cannot have 4-bit samples"),
            (raw_png(4, 4, 5, 8, 0, b"x"), "colour type 5 does not exist"),
            (
                raw_png(4, 4, 2, 8, 2, b"x"),
                "unknown compression, filter or interlace",
            ),
        ];
        for (png, says) in bad_headers {
            let e = check_secret(&png).unwrap_err();
            assert!(
                matches!(e, Error::NotAnImage(_)) && e.to_string().contains(says),
                "{e}"
            );
        }
        let e = check_secret(&raw_png(MAX_SIDE + 1, 1, 0, 8, 0, b"x")).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        // Something else first, or no image data before IEND.
        let mut no_header = good[..8].to_vec();
        no_header.extend_from_slice(&good[33..]);
        let e = check_secret(&no_header).unwrap_err();
        assert!(e.to_string().contains("does not start with IHDR"), "{e}");
        let mut no_data = good[..33].to_vec();
        no_data.extend_from_slice(&good[good.len() - 12..]);
        let e = check_secret(&no_data).unwrap_err();
        assert!(e.to_string().contains("no image data"), "{e}");
        // Other formats are decoded as before.
        assert!(matches!(
            check_secret(b"GIF89a"),
            Err(Error::Truncated(_) | Error::NotAnImage(_))
        ));
    }

    #[test]
    fn huge_interlaced_pngs_are_refused_before_allocating() {
        let key = SealKey::from_secret(b"k");
        // 16-bit RGBA, interlaced: 2 GiB of pixels, or 80 GB past the side limit, from ~40 bytes.
        for side in [MAX_SIDE, 100_000] {
            let png = raw_png(side, side, 6, 16, 1, &[0x78, 0x01]);
            let err = decrypt_image(&png, &key).unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)), "{err}");
            assert!(err.to_string().contains("too large"), "{err}");
        }
    }

    #[test]
    fn a_header_announcing_more_than_the_file_is_refused_before_allocating() {
        let key = SealKey::from_secret(b"k");
        let header = crate::codec::seal::Header {
            version: crate::codec::metadata::FORMAT_VERSION,
            bits: 1,
            body_len: 20_000_000,
            fingerprint: key.fingerprint(),
            nonce: [0; 24],
        }
        .to_bytes();
        // 8-bit gray, 2048 square (within the decode limits for its size): only the first row
        // is present (one stored deflate block), carrying the header in its low bits.
        let side = 2048;
        let mut row = vec![0u8; 1 + side as usize];
        for (k, bit) in header
            .iter()
            .flat_map(|b| (0..8).rev().map(move |s| (b >> s) & 1))
            .enumerate()
        {
            row[1 + k] = bit;
        }
        let mut idat = vec![0x78, 0x01, 0x00];
        idat.extend_from_slice(&(row.len() as u16).to_le_bytes());
        idat.extend_from_slice(&(!(row.len() as u16)).to_le_bytes());
        idat.extend_from_slice(&row);
        let png = raw_png(side, side, 0, 8, 0, &idat);
        let err = decrypt_image(&png, &key).unwrap_err();
        assert!(matches!(err, Error::Tampered(_)), "{err}");
        assert!(err.to_string().contains("whole file"), "{err}");
    }

    #[test]
    fn covers_past_the_decode_limits_are_refused() {
        let png = raw_png(MAX_SIDE + 1, 1, 0, 8, 0, &[0x78, 0x01]);
        let err = decode_image(&png, "cover").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn gathering_undoes_spreading_for_every_byte() {
        for byte in 0..=255u8 {
            // Bits above the carried ones must not leak into the result.
            let noisy1 = SPREAD_1[usize::from(byte)].map(|s| s | 0b1010_1110);
            assert_eq!(gather_1(&noisy1), byte);
            let noisy2 = SPREAD_2[usize::from(byte)].map(|s| s | 0b1111_0100);
            assert_eq!(gather_2(&noisy2), byte);
        }
        assert_eq!(SPREAD_1[0b1000_0001], [1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(SPREAD_2[0b1101_0010], [3, 1, 0, 2]);
    }

    #[test]
    fn noise_covers_are_stored_rather_than_inflated() {
        let key = SealKey::from_secret(b"k");
        let meta = ImageMeta::new("alice", vec![]).unwrap();
        let secret = encode_png(&DynamicImage::ImageRgb8(image::RgbImage::new(4, 4))).unwrap();
        let mut noise = image::RgbImage::new(96, 96);
        let mut x = 0x9E37_79B9u32;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let noise = DynamicImage::ImageRgb8(noise);
        let cover = encode_png(&noise).unwrap();
        let shape = Shape::of(&noise).unwrap();
        assert!(
            cover.len() > stored_png_len(&shape),
            "deflate should not help noise"
        );
        let out = encrypt_image(&secret, Cover::Image(&cover), &meta, &key).unwrap();
        assert_eq!(out.len(), stored_png_len(&shape));
        assert_eq!(decrypt_image(&out, &key).unwrap().1, secret);
    }

    #[test]
    fn carriers_skip_alpha() {
        let layout = Layout {
            channels: 4,
            colour: 3,
        };
        let indices: Vec<usize> = (0..6).map(|k| layout.index(k)).collect();
        assert_eq!(indices, [0, 1, 2, 4, 5, 6]);
        assert_eq!(samples_needed(1, 2), HEADER_SAMPLES as u64 + 4);
    }
}
