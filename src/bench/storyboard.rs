//! The sharing story's picture: what each user saw at each step, as thumbnails in a grid.
//!
//! One row per user, their frames left to right in the order of the story; under each
//! thumbnail the step and what it was: the image with the views left after it (green frame),
//! the default image (red frame), or a photo or preview that is not a view (grey frame). The
//! thumbnails are the very files the users' peers wrote, scaled down.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};

use crate::bench::plot::{plot_error, png_of, register_embedded_font, FAMILY, INK, RED};
use crate::bench::sharing::StoryFrame;
use crate::sharing::bodies::Shown;
use crate::Result;

/// A thumbnail's box.
const THUMB: (u32, u32) = (176, 110);
/// Room for a row's name on the left.
const LABEL: u32 = 96;
/// Space between cells.
const GAP: u32 = 14;
/// Height of the two caption lines under a thumbnail.
const CAPTION: u32 = 44;
/// Height of the title band.
const TITLE: u32 = 58;
/// The frame colour of an image shown.
const GREEN: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// The frame colour of something that is not a view.
const GREY: RGBColor = RGBColor(0x99, 0x99, 0x99);

/// Renders `frames` as a PNG file at `path`.
pub fn render(title: &str, frames: &[StoryFrame], path: &Path) -> Result<()> {
    std::fs::write(path, render_to_buffer(title, frames)?)?;
    Ok(())
}

/// Renders `frames` as PNG bytes: one row per user, in the order users first appear.
pub fn render_to_buffer(title: &str, frames: &[StoryFrame]) -> Result<Vec<u8>> {
    register_embedded_font();
    let mut users: Vec<&str> = Vec::new();
    for f in frames {
        if !users.contains(&f.who.as_str()) {
            users.push(&f.who);
        }
    }
    let rows: Vec<Vec<&StoryFrame>> = users
        .iter()
        .map(|u| frames.iter().filter(|f| f.who == *u).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0).max(1) as u32;
    let cell = (THUMB.0 + GAP, THUMB.1 + CAPTION + GAP);
    let width = LABEL + columns * cell.0 + GAP;
    let height = TITLE + rows.len().max(1) as u32 * cell.1 + GAP;

    // Thumbnails and their frames, with the image crate.
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, frame) in row.iter().enumerate() {
            let (x, y) = (LABEL + c as u32 * cell.0, TITLE + r as u32 * cell.1);
            let colour = colour(frame);
            let border = RgbImage::from_pixel(
                THUMB.0 + 6,
                THUMB.1 + 6,
                Rgb([colour.0, colour.1, colour.2]),
            );
            imageops::overlay(&mut canvas, &border, i64::from(x) - 3, i64::from(y) - 3);
            let mut inner = RgbImage::from_pixel(THUMB.0, THUMB.1, Rgb([240, 240, 240]));
            if let Some(img) = frame
                .png
                .as_deref()
                .and_then(|p| image::load_from_memory(p).ok())
            {
                let thumb = img.resize(THUMB.0, THUMB.1, FilterType::Triangle).to_rgb8();
                let (dx, dy) = (
                    (THUMB.0 - thumb.width()) / 2,
                    (THUMB.1 - thumb.height()) / 2,
                );
                imageops::overlay(&mut inner, &thumb, i64::from(dx), i64::from(dy));
            }
            imageops::overlay(&mut canvas, &inner, i64::from(x), i64::from(y));
        }
    }

    // Text, with plotters on the same pixels.
    let mut rgb = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let bold = |size| {
            (FAMILY, size)
                .into_font()
                .style(FontStyle::Bold)
                .color(&INK)
        };
        let plain = |size, c: &RGBColor| (FAMILY, size).into_font().color(c);
        root.draw_text(title, &bold(24), (LABEL as i32, 16))
            .map_err(plot_error)?;
        for (r, row) in rows.iter().enumerate() {
            let y = (TITLE + r as u32 * cell.1) as i32;
            root.draw_text(users[r], &bold(20), (12, y + THUMB.1 as i32 / 2 - 10))
                .map_err(plot_error)?;
            for (c, frame) in row.iter().enumerate() {
                let x = (LABEL + c as u32 * cell.0) as i32;
                let below = y + THUMB.1 as i32 + 6;
                root.draw_text(&frame.step, &plain(15, &INK), (x, below))
                    .map_err(plot_error)?;
                root.draw_text(&what(frame), &plain(15, &colour(frame)), (x, below + 19))
                    .map_err(plot_error)?;
            }
        }
        root.present().map_err(plot_error)?;
    }
    png_of(width, height, rgb)
}

/// The frame's colour: green for an image shown, red for the default image, grey otherwise.
fn colour(frame: &StoryFrame) -> RGBColor {
    match frame.shown {
        Some(Shown::Image) => GREEN,
        Some(Shown::Default) => RED,
        None => GREY,
    }
}

/// The caption's second line.
fn what(frame: &StoryFrame) -> String {
    match (frame.shown, frame.views_left) {
        (Some(Shown::Image), Some(1)) => "image, 1 view left".to_string(),
        (Some(Shown::Image), Some(n)) => format!("image, {n} views left"),
        (Some(Shown::Image), None) => "image".to_string(),
        (Some(Shown::Default), _) => "default image".to_string(),
        (None, _) => "not a view".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(who: &str, shown: Option<Shown>, png: Option<Vec<u8>>) -> StoryFrame {
        StoryFrame {
            who: who.into(),
            step: "a step".into(),
            png,
            shown,
            views_left: Some(1),
        }
    }

    #[test]
    fn one_row_per_user_one_column_per_frame_of_the_busiest() {
        let photo = crate::bench::sharing::sunset(64, 40);
        let frames = [
            frame("alice", None, Some(photo.clone())),
            frame("bob", Some(Shown::Image), Some(photo.clone())),
            frame("bob", Some(Shown::Default), None),
            frame("bob", Some(Shown::Image), Some(b"not a png".to_vec())),
        ];
        let png = render_to_buffer("title", &frames).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        let cell = (THUMB.0 + GAP, THUMB.1 + CAPTION + GAP);
        assert_eq!(
            (img.width(), img.height()),
            (LABEL + 3 * cell.0 + GAP, TITLE + 2 * cell.1 + GAP)
        );
        // bob's second thumbnail has a red frame: the default image.
        let x = LABEL + cell.0 - 2;
        let y = TITLE + cell.1 + THUMB.1 / 2;
        assert_eq!(img.to_rgb8().get_pixel(x, y).0, [RED.0, RED.1, RED.2]);
    }
}
