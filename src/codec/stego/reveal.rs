//! Finding and opening a payload: the header from the first 384 carriers, then the body, reading
//! only the rows that hold them.

use super::carriers::{gather_1, gather_2, low_byte, normalise, Layout, Shape};
use super::input::{
    decode_image, png_error, png_reader, png_shape, too_large_png, MAX_DECODED_BYTES, PNG_SIGNATURE,
};
use super::{samples_needed, HEADER_SAMPLES};
use crate::codec::metadata::ImageMeta;
use crate::codec::seal::{SealKey, HEADER_LEN};
use crate::error::{Error, Result};

/// Finds, authenticates and decrypts the payload of an image made by [`encrypt_image`].
pub fn decrypt_image(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    if png.starts_with(PNG_SIGNATURE) {
        return reveal_png(png, key);
    }
    // Not a PNG: any other lossless format may still carry a payload.
    let image = normalise(decode_image(png, "image")?)?;
    let layout = Shape::of(&image)?.layout;
    let total = layout.carriers(image.width(), image.height());
    let mut fill = |lows: &mut Vec<u8>, want: usize| {
        let upto = (want as u64).min(total) as usize;
        lows.extend((lows.len()..upto).map(|k| low_byte(&image, layout.index(k))));
        Ok(())
    };
    reveal_with(key, total, png.len(), &mut fill)
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
        *byte = gather_1(chunk);
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
    let lows = &lows[HEADER_SAMPLES..needed];
    let body: Vec<u8> = if header.bits == 1 {
        lows.chunks_exact(8).map(gather_1).collect()
    } else {
        lows.chunks_exact(4).map(gather_2).collect()
    };
    key.open(&header, body)
}

/// Reveals from a PNG, decompressing only the rows that hold the payload.
fn reveal_png(png: &[u8], key: &SealKey) -> Result<(ImageMeta, Vec<u8>)> {
    let len = png.len();
    let Some(mut reader) = png_reader(png, "image")? else {
        return Err(Error::NotAnImage(format!(
            "the file ({len} bytes) is not a PNG"
        )));
    };
    let shape = png_shape(&reader, len)?;
    let Layout { channels, colour } = shape.layout;
    let bytes_per_sample = shape.bytes_per_sample();
    let (width, interlaced) = (shape.width as usize, reader.info().interlaced);
    let (w, h) = (shape.width, shape.height);
    let total = shape.carriers();
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
            .map_err(|e| png_error(e, "image", len))?;
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
            match reader.next_row().map_err(|e| png_error(e, "image", len))? {
                Some(row) => push_row(row.data(), lows),
                None => break,
            }
        }
        Ok(())
    };
    reveal_with(key, total, len, &mut fill)
}
