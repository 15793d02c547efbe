//! PNG and JPEG through `image`: 8/16-bit gray, and colour exports reduced to gray.

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom};

use anyhow::{Context, bail};
use image::{DynamicImage, ImageFormat, ImageReader};

use super::tiff_reader::{BASE_ALLOWANCE, MAX_EXPANSION};
use super::{Decoded, MAX_SIDE, check_dims, color_to_gray};
use crate::raster::ImageF32;

pub(crate) fn decode<R: BufRead + Seek>(mut r: R, png: bool) -> anyhow::Result<Decoded> {
    let file_len = r
        .seek(SeekFrom::End(0))
        .context("cannot seek in the file")?;
    r.seek(SeekFrom::Start(0))
        .context("cannot seek in the file")?;
    let fmt = if png {
        ImageFormat::Png
    } else {
        ImageFormat::Jpeg
    };
    let name = if png { "PNG" } else { "JPEG" };
    let mut reader = ImageReader::with_format(r, fmt);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    // A flipped header byte must not make a 10 kB file allocate gigabytes.
    limits.max_alloc = Some(
        file_len
            .saturating_mul(MAX_EXPANSION)
            .max(BASE_ALLOWANCE)
            .min((super::MAX_PIXELS as u64) * 16),
    );
    reader.limits(limits);
    let img = reader
        .decode()
        .with_context(|| format!("cannot decode the {name} data"))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    check_dims(w, h)?;

    let mut metadata = BTreeMap::new();
    let (image, pixel_type) = match img {
        DynamicImage::ImageLuma8(b) => (gray(w, h, b.into_raw()), "u8".to_string()),
        DynamicImage::ImageLuma16(b) => (gray(w, h, b.into_raw()), "u16".to_string()),
        DynamicImage::ImageLumaA8(b) => (gray_alpha(w, h, b.into_raw()), "u8 GrayA (gray)".into()),
        DynamicImage::ImageLumaA16(b) => {
            (gray_alpha(w, h, b.into_raw()), "u16 GrayA (gray)".into())
        }
        DynamicImage::ImageRgb8(b) => colour(w, h, &b.into_raw(), 3, "u8 RGB", &mut metadata),
        DynamicImage::ImageRgba8(b) => colour(w, h, &b.into_raw(), 4, "u8 RGBA", &mut metadata),
        DynamicImage::ImageRgb16(b) => colour(w, h, &b.into_raw(), 3, "u16 RGB", &mut metadata),
        DynamicImage::ImageRgba16(b) => colour(w, h, &b.into_raw(), 4, "u16 RGBA", &mut metadata),
        DynamicImage::ImageRgb32F(b) => colour(w, h, &b.into_raw(), 3, "f32 RGB", &mut metadata),
        DynamicImage::ImageRgba32F(b) => colour(w, h, &b.into_raw(), 4, "f32 RGBA", &mut metadata),
        other => bail!("unsupported {name} pixel layout {:?}", other.color()),
    };
    Ok(Decoded {
        image,
        pixel_size: None,
        original_unit: None,
        pixel_type,
        format: name.into(),
        pages: 1,
        metadata,
    })
}

fn gray<T: Copy + Into<f32>>(w: usize, h: usize, v: Vec<T>) -> ImageF32 {
    ImageF32::from_vec(w, h, v.into_iter().map(Into::into).collect())
}

fn gray_alpha<T: Copy + Into<f32>>(w: usize, h: usize, v: Vec<T>) -> ImageF32 {
    ImageF32::from_vec(w, h, v.chunks_exact(2).map(|p| p[0].into()).collect())
}

fn colour<T: Copy + Into<f32>>(
    w: usize,
    h: usize,
    v: &[T],
    channels: usize,
    layout: &str,
    metadata: &mut BTreeMap<String, String>,
) -> (ImageF32, String) {
    let samples: Vec<f32> = v.iter().map(|&x| x.into()).collect();
    let (img, is_gray) = color_to_gray(&samples, w, h, channels);
    if !is_gray {
        metadata.insert(
            "color_conversion".into(),
            "colour image reduced to Rec. 601 luminance".into(),
        );
    }
    let how = if is_gray { "gray" } else { "luminance" };
    (img, format!("{layout} ({how})"))
}
