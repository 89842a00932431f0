//! Reading images the codec is handed: any format the `image` crate decodes, within limits on
//! size and on decoded bytes per file byte set before anything is allocated; the secret checked
//! as a whole PNG container; every decoder error turned into a sentence about which file.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};

use super::carriers::Shape;
use crate::error::{Error, Result};

/// The eight bytes every PNG file starts with.
pub(super) const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Most bytes one decoded image may take (8192x8192 RGBA at 8 bits); larger ones are refused
/// before their pixels are allocated.
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Longest side of an image the codec decodes, in pixels (twice the largest default cover).
pub const MAX_SIDE: u32 = 16384;
/// Decoded bytes any image may have, whatever its file size (a 1.4-megapixel RGB image).
pub const FREE_DECODED_BYTES: u64 = 4 * 1024 * 1024;
/// Beyond [`FREE_DECODED_BYTES`], decoded bytes allowed per byte of file: a tiny file that
/// claims a huge image (decoders fill in what is missing) would cost seconds of CPU per request.
pub const MAX_EXPANSION: u64 = 1024;

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
    limits.max_alloc = Some(decode_allowance(bytes.len()));
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

/// Checks that the secret is a whole image before it is hidden. A PNG (the usual secret) is
/// checked as a container, not decoded: its header must be valid, every chunk must be complete
/// with a matching CRC-32, and the file must reach IEND. That finds truncated and damaged files
/// at a twentieth of the cost of a decode, which was half of a default-cover hide (DESIGN.md,
/// "Checking the secret"). Other formats are decoded.
pub(super) fn check_secret(secret: &[u8]) -> Result<()> {
    if !secret.starts_with(PNG_SIGNATURE) {
        return decode_image(secret, "secret image").map(drop);
    }
    let name = format!("the secret image (PNG, {} bytes)", secret.len());
    let damaged = |why: String| Error::NotAnImage(format!("{name} is damaged: {why}"));
    let mut rest = &secret[PNG_SIGNATURE.len()..];
    let (mut seen_header, mut seen_data) = (false, false);
    loop {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(Error::Truncated(format!(
                "{name} ends before its IEND chunk"
            )));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len.saturating_add(8) {
            return Err(Error::Truncated(format!(
                "{name} ends inside a chunk that announces {len} bytes"
            )));
        }
        let (typed, tail) = tail.split_at(4 + len);
        let (crc, tail) = tail.split_at(4);
        let (kind, data) = typed.split_at(4);
        if crc32fast::hash(typed).to_be_bytes() != crc {
            let kind = String::from_utf8_lossy(kind);
            return Err(damaged(format!("its {kind} chunk fails its checksum")));
        }
        match kind {
            b"IHDR" if !seen_header => check_png_header(data, &name)?,
            _ if !seen_header => return Err(damaged("it does not start with IHDR".into())),
            b"IHDR" => return Err(damaged("it has two IHDR chunks".into())),
            b"IDAT" => seen_data = true,
            b"IEND" if seen_data => return Ok(()),
            b"IEND" => return Err(damaged("it has no image data (IDAT)".into())),
            _ => {}
        }
        seen_header = true;
        rest = tail;
    }
}

/// Checks that a PNG header chunk describes an image the PNG standard allows and the codec
/// accepts; `name` says which file, for the error.
fn check_png_header(data: &[u8], name: &str) -> Result<()> {
    let damaged = |why: String| Err(Error::NotAnImage(format!("{name} is damaged: {why}")));
    let &[w0, w1, w2, w3, h0, h1, h2, h3, depth, colour, compression, filter, interlace] = data
    else {
        return damaged(format!("its IHDR chunk has {} bytes, not 13", data.len()));
    };
    let (w, h) = (
        u32::from_be_bytes([w0, w1, w2, w3]),
        u32::from_be_bytes([h0, h1, h2, h3]),
    );
    if w == 0 || h == 0 {
        return damaged(format!("it claims {w}x{h} pixels"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Unsupported(format!(
            "{name} is {w}x{h}, too large (at most {MAX_SIDE} pixels a side)"
        )));
    }
    let depths: &[u8] = match colour {
        0 => &[1, 2, 4, 8, 16],
        3 => &[1, 2, 4, 8],
        2 | 4 | 6 => &[8, 16],
        _ => return damaged(format!("colour type {colour} does not exist")),
    };
    if !depths.contains(&depth) {
        return damaged(format!(
            "colour type {colour} cannot have {depth}-bit samples"
        ));
    }
    if compression != 0 || filter != 0 || interlace > 1 {
        return damaged("its IHDR names an unknown compression, filter or interlace method".into());
    }
    Ok(())
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

/// Most decoded bytes allowed for an encoded image of `file_len` bytes.
fn decode_allowance(file_len: usize) -> u64 {
    MAX_DECODED_BYTES
        .min(FREE_DECODED_BYTES.saturating_add(MAX_EXPANSION.saturating_mul(file_len as u64)))
}

/// A PNG reader of `bytes` that expands palettes and low-bit gray, or `None` if `bytes` is not
/// a PNG.
pub(super) fn png_reader<'a>(
    bytes: &'a [u8],
    what: &str,
) -> Result<Option<png::Reader<Cursor<&'a [u8]>>>> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Ok(None);
    }
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let reader = decoder
        .read_info()
        .map_err(|e| png_error(e, what, bytes.len()))?;
    Ok(Some(reader))
}

/// The error for a PNG whose size is past [`MAX_SIDE`] or [`MAX_DECODED_BYTES`].
pub(super) fn too_large_png(len: usize, width: u32, height: u32) -> Error {
    Error::Unsupported(format!(
        "the PNG ({len} bytes) is {width}x{height}, too large to decode (at most {MAX_SIDE} pixels a side and {} MiB of pixels)",
        MAX_DECODED_BYTES >> 20
    ))
}

/// Translates a `png` crate error about the `what` (cover, image) into the codec's sentences.
pub(super) fn png_error(e: png::DecodingError, what: &str, len: usize) -> Error {
    let name = format!("the {what} (PNG, {len} bytes)");
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated(format!("{name} ends before the image is complete"))
        }
        png::DecodingError::LimitsExceeded => {
            Error::Unsupported(format!("{name} is too large to decode"))
        }
        other if looks_truncated(&other.to_string()) => Error::Truncated(format!(
            "{name} ends before the image is complete ({other})"
        )),
        other => Error::NotAnImage(format!("{name} is damaged: {other}")),
    }
}

/// The [`Shape`] of the rows a PNG reader (with [`png::Transformations::EXPAND`]) yields,
/// refused if decoding it would pass the limits of [`decode_image`].
pub(super) fn png_shape<R: std::io::BufRead + std::io::Seek>(
    reader: &png::Reader<R>,
    file_len: usize,
) -> Result<Shape> {
    let (color, depth) = reader.output_color_type();
    let info = reader.info();
    let shape = Shape::new(
        info.width,
        info.height,
        color,
        depth == png::BitDepth::Sixteen,
    )?;
    let decoded = shape.row_len() as u64 * u64::from(shape.height);
    if info.width > MAX_SIDE || info.height > MAX_SIDE || decoded > decode_allowance(file_len) {
        return Err(too_large_png(file_len, info.width, info.height));
    }
    Ok(shape)
}
