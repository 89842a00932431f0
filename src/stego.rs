//! Hiding a sealed payload in the low bits of a cover image, and finding it again.
//!
//! How it works. The cover is decoded with the `image` crate into one of eight sample layouts:
//! gray, gray+alpha, RGB or RGBA, each at 8 or 16 bits per sample. Other inputs are converted
//! first: palette images become RGB (or RGBA when they have transparency), 1/2/4-bit gray
//! becomes 8-bit gray, and floating-point images become 16-bit RGB(A). The "carriers" are the
//! colour samples in raster order (row by row, pixel by pixel, channel by channel), skipping
//! alpha, which is never changed. The 48-byte header ([`crate::seal`]) goes into the lowest bit
//! of the first 384 carriers, most significant bit first; the sealed body follows at 1 or 2 bits
//! per carrier (the header says which). For 16-bit samples the low bits of the 16-bit value are
//! used, so the output stays 16-bit. Only the carriers the payload needs are touched; the rest
//! of the cover is copied as it was, and the result is written as PNG (fast deflate, "Up"
//! filter) with the cover's size and sample layout.
//!
//! Revealing reads the PNG row by row with the `png` crate and stops as soon as the header and
//! then the body are complete, so for a large cover only its first rows are decompressed. Any
//! other lossless format the `image` crate decodes is read whole instead.
//!
//! Implementation caveats: sequential carriers make the payload easy to find for anyone who
//! looks for it statistically (the AEAD keeps it unreadable and tamper-evident, not hidden from
//! steganalysis); the secret is decoded once on hide only to check that it is a whole image;
//! metadata such as gamma, ICC profiles and text chunks of the cover is not carried over.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageError, ImageFormat, ImageReader};

use crate::cover::DefaultCovers;
use crate::error::{Error, Result};
use crate::metadata::ImageMeta;
use crate::seal::{encode_plaintext, SealKey, HEADER_LEN, TAG_LEN};

/// PNG filter of every output: as small as adaptive on photos within 5 %, and 20 % faster (see DESIGN.md).
pub const PNG_FILTER: FilterType = FilterType::Up;

/// Carriers holding the header (one bit each).
pub const HEADER_SAMPLES: usize = HEADER_LEN * 8;

/// Most bytes one decoded image may take (8192x8192 RGBA at 8 bits); larger ones are refused
/// before their pixels are allocated.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Longest side of an image the codec decodes, in pixels (twice the largest default cover).
pub const MAX_SIDE: u32 = 16384;
/// Decoded bytes any image may have, whatever its file size.
pub const FREE_DECODED_BYTES: u64 = 64 * 1024 * 1024;
/// Beyond [`FREE_DECODED_BYTES`], decoded bytes allowed per byte of file: a tiny file that
/// claims a huge image (decoders fill in what is missing) would cost seconds of CPU per request.
pub const MAX_EXPANSION: u64 = 1024;

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
    decode_image(secret, "secret image")?;
    let plaintext = encode_plaintext(meta, secret)?;
    let body_len = plaintext.len() + TAG_LEN;
    let image = match cover {
        Cover::Image(bytes) => normalise(decode_image(bytes, "cover")?)?,
        Cover::Default(covers) => {
            let fitting = |bits| covers.for_samples(samples_needed(body_len, bits));
            let painted = match options.bits {
                Some(bits) => fitting(bits),
                None => fitting(1).or_else(|| fitting(2)),
            };
            let painted = painted.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the payload is {body_len} bytes, larger than the largest default cover holds; give a cover"
                ))
            })?;
            DynamicImage::ImageRgb8((*painted).clone())
        }
    };
    let mut image = image;
    let layout = Layout::of(&image)?;
    let bits = choose_bits(&image, layout, body_len, options.bits)?;
    let (header, body) = key.seal(bits, plaintext)?;
    match &mut image {
        DynamicImage::ImageLuma8(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageLumaA8(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageRgb8(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageRgba8(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageLuma16(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageLumaA16(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageRgb16(b) => embed(b, layout, &header, &body, bits),
        DynamicImage::ImageRgba16(b) => embed(b, layout, &header, &body, bits),
        other => return Err(unsupported_colour(other)),
    }
    encode_png(&image)
}

/// Finds, authenticates and decrypts the payload of an image made by [`encrypt_image`].
pub fn decrypt_image(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    if png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return reveal_png(png, key);
    }
    // Not a PNG: any other lossless format may still carry a payload.
    let image = normalise(decode_image(png, "image")?)?;
    let layout = Layout::of(&image)?;
    let total = layout.carriers(image.width(), image.height());
    let mut fill = |lows: &mut Vec<u8>, want: usize| {
        let upto = (want as u64).min(total) as usize;
        lows.extend((lows.len()..upto).map(|k| low_byte(&image, layout.index(k))));
        Ok(())
    };
    reveal_with(key, total, png.len(), &mut fill)
}

/// Encodes an image as PNG with the codec's settings (fast deflate, [`PNG_FILTER`]).
pub fn encode_png(image: &DynamicImage) -> Result<Vec<u8>> {
    // Photos rarely compress below 3/4 of raw with fast deflate: one allocation, no regrowth.
    let mut out = Vec::with_capacity(image.as_bytes().len() / 4 * 3 + 1024);
    let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PNG_FILTER);
    image
        .write_with_encoder(encoder)
        .map_err(|e| Error::Unsupported(format!("the result cannot be written as PNG: {e}")))?;
    Ok(out)
}

/// The usual file extension of an encoded image (e.g. "png", "jpg"), if its format is known.
pub fn image_extension(bytes: &[u8]) -> Option<&'static str> {
    let format = image::guess_format(bytes).ok()?;
    format.extensions_str().first().copied()
}

/// Decodes any image the `image` crate reads, turning its errors into sentences about `what`.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(Error::Io)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    let allowance =
        FREE_DECODED_BYTES.saturating_add(MAX_EXPANSION.saturating_mul(bytes.len() as u64));
    limits.max_alloc = Some(MAX_DECODED_BYTES.min(allowance));
    reader.limits(limits);
    let Some(format) = reader.format() else {
        return Err(Error::NotAnImage(format!(
            "the {what} ({} bytes) is in no image format imgcloud reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)",
            bytes.len()
        )));
    };
    reader
        .decode()
        .map_err(|e| image_error(e, what, format, bytes.len()))
}

/// Translates an `image` crate error into the codec's error sentences.
fn image_error(e: ImageError, what: &str, format: ImageFormat, len: usize) -> Error {
    let name = format!("the {what} ({format:?}, {len} bytes)");
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated(format!("{name} ends before the image is complete"))
        }
        ImageError::Decoding(d) if looks_truncated(&d.to_string()) => {
            Error::Truncated(format!("{name} ends before the image is complete ({d})"))
        }
        ImageError::Unsupported(u) => Error::Unsupported(format!("{name}: {u}")),
        ImageError::Limits(l) => Error::Unsupported(format!("{name} is too large to decode: {l}")),
        other => Error::NotAnImage(format!("{name} cannot be decoded: {other}")),
    }
}

/// Whether a decoder's message describes input that stops early.
fn looks_truncated(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "eof",
        "end of",
        "truncat",
        "unexpected end",
        "not enough data",
        "too short",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// Converts a decoded image into one of the eight layouts that carry a payload.
fn normalise(image: DynamicImage) -> Result<DynamicImage> {
    Ok(match image {
        DynamicImage::ImageRgb32F(_) => DynamicImage::ImageRgb16(image.to_rgb16()),
        DynamicImage::ImageRgba32F(_) => DynamicImage::ImageRgba16(image.to_rgba16()),
        other => {
            Layout::of(&other)?;
            other
        }
    })
}

/// The error for a sample layout the codec does not handle.
fn unsupported_colour(image: &DynamicImage) -> Error {
    Error::Unsupported(format!(
        "the cover's colour type {:?} cannot carry a payload",
        image.color()
    ))
}

/// Where the carriers sit among the samples: `colour` of every `channels` samples.
#[derive(Clone, Copy, Debug)]
struct Layout {
    channels: usize,
    colour: usize,
}

impl Layout {
    /// The layout of a normalised image.
    fn of(image: &DynamicImage) -> Result<Layout> {
        let (channels, colour) = match image {
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageLuma16(_) => (1, 1),
            DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => (2, 1),
            DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgb16(_) => (3, 3),
            DynamicImage::ImageRgba8(_) | DynamicImage::ImageRgba16(_) => (4, 3),
            other => return Err(unsupported_colour(other)),
        };
        Ok(Layout { channels, colour })
    }

    /// Number of carriers in an image of this size.
    fn carriers(&self, width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * self.colour as u64
    }

    /// Sample index of carrier `k`.
    fn index(&self, k: usize) -> usize {
        if self.channels == self.colour {
            k
        } else {
            k / self.colour * self.channels + k % self.colour
        }
    }
}

/// Carriers needed for a body of `body_len` bytes at `bits` per carrier, header included.
pub fn samples_needed(body_len: usize, bits: u8) -> u64 {
    HEADER_SAMPLES as u64 + (body_len as u64 * 8).div_ceil(u64::from(bits))
}

/// Picks the fewest bits per carrier that fit (or checks the requested ones).
fn choose_bits(
    image: &DynamicImage,
    layout: Layout,
    body_len: usize,
    requested: Option<u8>,
) -> Result<u8> {
    let total = layout.carriers(image.width(), image.height());
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
    let min_pixels = needed.div_ceil(layout.colour as u64);
    Err(Error::CoverTooSmall {
        width: image.width(),
        height: image.height(),
        capacity: (total.saturating_sub(HEADER_SAMPLES as u64) * u64::from(bits) / 8) as usize,
        needed: body_len,
        min_pixels,
        suggest_side: (min_pixels as f64).sqrt().ceil() as u32,
    })
}

/// A sample whose lowest bits can carry payload bits.
trait Sample: Copy {
    /// The sample with the bits under `mask` replaced by `value`.
    fn with_low(self, mask: u8, value: u8) -> Self;
}

impl Sample for u8 {
    fn with_low(self, mask: u8, value: u8) -> u8 {
        (self & !mask) | value
    }
}

impl Sample for u16 {
    fn with_low(self, mask: u8, value: u8) -> u16 {
        (self & !u16::from(mask)) | u16::from(value)
    }
}

/// Writes the header at one bit per carrier, then the body at `bits` per carrier.
fn embed<T: Sample>(samples: &mut [T], layout: Layout, header: &[u8], body: &[u8], bits: u8) {
    let mut k = 0;
    for &byte in header {
        for shift in (0..8).rev() {
            let i = layout.index(k);
            samples[i] = samples[i].with_low(1, (byte >> shift) & 1);
            k += 1;
        }
    }
    let mask = (1u8 << bits) - 1;
    for &byte in body {
        for step in (0..8 / bits).rev() {
            let i = layout.index(k);
            samples[i] = samples[i].with_low(mask, (byte >> (step * bits)) & mask);
            k += 1;
        }
    }
}

/// The least significant byte of sample `i` of a normalised image.
fn low_byte(image: &DynamicImage, i: usize) -> u8 {
    match image {
        DynamicImage::ImageLuma8(b) => b.as_raw()[i],
        DynamicImage::ImageLumaA8(b) => b.as_raw()[i],
        DynamicImage::ImageRgb8(b) => b.as_raw()[i],
        DynamicImage::ImageRgba8(b) => b.as_raw()[i],
        DynamicImage::ImageLuma16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageLumaA16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageRgb16(b) => b.as_raw()[i] as u8,
        DynamicImage::ImageRgba16(b) => b.as_raw()[i] as u8,
        _ => 0,
    }
}

/// Reads header then body from the carriers' low bytes, which `fill` appends on demand.
///
/// `file_len` is the size of the encoded image: the sealed body is incompressible, so a header
/// announcing a body longer than the whole file is refused before anything is allocated for it.
fn reveal_with(
    key: &SealKey,
    total: u64,
    file_len: usize,
    fill: &mut dyn FnMut(&mut Vec<u8>, usize) -> Result<()>,
) -> Result<(ImageMeta, Vec<u8>)> {
    let mut lows = Vec::with_capacity(HEADER_SAMPLES * 4);
    fill(&mut lows, HEADER_SAMPLES)?;
    if lows.len() < HEADER_SAMPLES {
        return Err(Error::NoPayload);
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    for (byte, chunk) in header_bytes.iter_mut().zip(lows.chunks_exact(8)) {
        *byte = chunk.iter().fold(0, |acc, &low| (acc << 1) | (low & 1));
    }
    let header = key.open_header(&header_bytes)?;
    if header.body_len as usize > file_len {
        return Err(Error::Tampered(format!(
            "the header says {} bytes are hidden, but the whole file is {file_len} bytes",
            header.body_len
        )));
    }
    let needed = samples_needed(header.body_len as usize, header.bits);
    if needed > total {
        return Err(Error::Tampered(format!(
            "the header says {} bytes are hidden, but the image has room for at most {}",
            header.body_len,
            total.saturating_sub(HEADER_SAMPLES as u64) * u64::from(header.bits) / 8
        )));
    }
    let needed = needed as usize;
    lows.reserve(needed.saturating_sub(lows.len()));
    fill(&mut lows, needed)?;
    if lows.len() < needed {
        return Err(Error::Truncated(format!(
            "the image ends after {} of the {needed} samples that hold the payload",
            lows.len()
        )));
    }
    let bits = header.bits;
    let mask = (1u8 << bits) - 1;
    let per_byte = (8 / bits) as usize;
    let body: Vec<u8> = lows[HEADER_SAMPLES..needed]
        .chunks_exact(per_byte)
        .map(|chunk| {
            chunk
                .iter()
                .fold(0, |acc, &low| (acc << bits) | (low & mask))
        })
        .collect();
    key.open(&header, body)
}

/// Reveals from a PNG, decompressing only the rows that hold the payload.
fn reveal_png(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    let len = png.len();
    let mut decoder = png::Decoder::new(Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| png_error(e, len))?;
    let (colour_type, depth) = reader.output_color_type();
    let (channels, colour) = match colour_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => {
            return Err(Error::Unsupported(
                "the PNG's palette could not be expanded".into(),
            ))
        }
    };
    let layout = Layout { channels, colour };
    let bytes_per_sample = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    let info = reader.info();
    let (width, interlaced) = (info.width as usize, info.interlaced);
    let (w, h) = (info.width, info.height);
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(too_large_png(len, w, h));
    }
    let total = layout.carriers(w, h);
    // Appends the low bytes of one row's carriers (16-bit samples are big-endian).
    let push_row = move |row: &[u8], lows: &mut Vec<u8>| {
        if bytes_per_sample == 1 && channels == colour {
            // No alpha, 8 bits: every byte of the row is a carrier.
            lows.extend_from_slice(&row[..(width * channels).min(row.len())]);
            return;
        }
        for px in row.chunks_exact(channels * bytes_per_sample).take(width) {
            for c in 0..colour {
                lows.push(px[c * bytes_per_sample + bytes_per_sample - 1]);
            }
        }
    };
    if interlaced {
        // Interlaced rows arrive in passes: decode the whole frame, then walk it in order.
        let size = reader
            .output_buffer_size()
            .filter(|&size| size as u64 <= MAX_DECODED_BYTES)
            .ok_or_else(|| too_large_png(len, w, h))?;
        let mut frame = vec![0u8; size];
        let out = reader
            .next_frame(&mut frame)
            .map_err(|e| png_error(e, len))?;
        let mut rows = frame.chunks_exact(out.line_size);
        let mut fill = |lows: &mut Vec<u8>, want: usize| {
            while lows.len() < want {
                match rows.next() {
                    Some(row) => push_row(row, lows),
                    None => break,
                }
            }
            Ok(())
        };
        return reveal_with(key, total, len, &mut fill);
    }
    let mut fill = |lows: &mut Vec<u8>, want: usize| {
        while lows.len() < want {
            match reader.next_row().map_err(|e| png_error(e, len))? {
                Some(row) => push_row(row.data(), lows),
                None => break,
            }
        }
        Ok(())
    };
    reveal_with(key, total, len, &mut fill)
}

/// The error for a PNG whose size is past [`MAX_SIDE`] or [`MAX_DECODED_BYTES`].
fn too_large_png(len: usize, width: u32, height: u32) -> Error {
    Error::Unsupported(format!(
        "the PNG ({len} bytes) is {width}x{height}, too large to decode (at most {MAX_SIDE} pixels a side and {} MiB of pixels)",
        MAX_DECODED_BYTES >> 20
    ))
}

/// Translates a `png` crate error into the codec's error sentences.
fn png_error(e: png::DecodingError, len: usize) -> Error {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated(format!(
                "the PNG ({len} bytes) ends before the image is complete"
            ))
        }
        png::DecodingError::LimitsExceeded => {
            Error::Unsupported(format!("the PNG ({len} bytes) is too large to decode"))
        }
        other if looks_truncated(&other.to_string()) => Error::Truncated(format!(
            "the PNG ({len} bytes) ends before the image is complete ({other})"
        )),
        other => Error::NotAnImage(format!(
            "the file starts like a PNG ({len} bytes) but is damaged: {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
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
        jpeg[sof + 5..sof + 7].copy_from_slice(&4608u16.to_be_bytes());
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

    use super::*;

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

    /// CRC-32 of PNG chunks (bitwise; tests only).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
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
            let crc = crc32(&out[start..]);
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
        let header = crate::seal::Header {
            version: crate::metadata::FORMAT_VERSION,
            bits: 1,
            body_len: 20_000_000,
            fingerprint: key.fingerprint(),
            nonce: [0; 24],
        }
        .to_bytes();
        // 8-bit gray, MAX_SIDE square: room for the announced 20 MB, but only the first row is
        // present (one stored deflate block), carrying the header in its low bits.
        let mut row = vec![0u8; 1 + MAX_SIDE as usize];
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
        let png = raw_png(MAX_SIDE, MAX_SIDE, 0, 8, 0, &idat);
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
