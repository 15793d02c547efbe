//! The zoomable, pannable image canvas with an oriented-box overlay, shared by every tab.
//!
//! Scroll (or pinch / ctrl+scroll) zooms around the cursor, dragging pans, double-click fits.
//! The view is kept in image pixels per screen point plus the image point under the canvas
//! centre, so a new image of the same size keeps the view (flipping through a folder).

use defect_detector::classes::class_color;
use defect_detector::geometry::{OrientedBox, Pt};
use egui::{Color32, ColorImage, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions, Vec2};

/// A box to draw over the image.
#[derive(Clone, Debug)]
pub struct OverlayBox {
    pub obb: OrientedBox,
    pub class: usize,
    /// Shown after the class name (e.g. a confidence).
    pub caption: Option<String>,
    /// Details for the hover tooltip.
    pub tooltip: String,
}

/// A class's display colour as egui takes it.
pub fn class_color32(class: usize) -> Color32 {
    let [r, g, b] = class_color(class);
    Color32::from_rgb(r, g, b)
}

/// Draws a box outline in its class colour, image points mapped to the screen by `to_screen`;
/// returns the screen corners. Every view draws boxes through here so they look alike (and the
/// tests find them as one closed four-point path in the class colour).
pub fn paint_box(
    painter: &egui::Painter,
    obb: &OrientedBox,
    class: usize,
    width: f32,
    to_screen: impl Fn(Pt) -> Pos2,
) -> Vec<Pos2> {
    let pts: Vec<Pos2> = obb.corners().iter().map(|&c| to_screen(c)).collect();
    painter.add(egui::Shape::closed_line(
        pts.clone(),
        Stroke::new(width, class_color32(class)),
    ));
    pts
}

/// What happened on the canvas this frame.
#[derive(Default)]
pub struct CanvasResponse {
    pub hovered_box: Option<usize>,
    /// The image position under the pointer, if it is over the image.
    pub pointer_image_pos: Option<Pt>,
    pub clicked_box: Option<usize>,
    pub response: Option<egui::Response>,
}

pub struct ImageCanvas {
    id: String,
    texture: Option<TextureHandle>,
    size: [usize; 2],
    /// Screen points per image pixel.
    zoom: f32,
    /// Image point shown at the canvas centre.
    centre: Pt,
    fit_pending: bool,
    /// The view is the automatic fit (nobody zoomed or panned since): it follows the canvas
    /// size, so the first frames of a new layout, when panels are still settling, and window
    /// resizes keep the whole image in view.
    auto_fit: bool,
    last_rect: Option<Rect>,
    /// A translucent map drawn over the image and under the boxes (lattice maps).
    layer: Option<MapLayer>,
}

/// An RGBA map covering the image rectangle `[x0, y0, x1, y1]` (image pixels).
pub struct MapLayer {
    texture: TextureHandle,
    pub rect: [f64; 4],
    /// 0 (invisible) to 1 (opaque).
    pub opacity: f32,
}

impl ImageCanvas {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            texture: None,
            size: [0, 0],
            zoom: 1.0,
            centre: [0.0, 0.0],
            fit_pending: true,
            auto_fit: false,
            last_rect: None,
            layer: None,
        }
    }

    /// Shows `w x h` RGBA pixels stretched over the image rectangle `rect` (image pixels),
    /// smoothly interpolated, at `opacity`; `None` removes the layer.
    pub fn set_layer(
        &mut self,
        ctx: &egui::Context,
        layer: Option<(usize, usize, &[u8], [f64; 4])>,
        opacity: f32,
    ) {
        self.layer = layer.map(|(w, h, rgba, rect)| MapLayer {
            texture: ctx.load_texture(
                format!("{}-layer", self.id),
                ColorImage::from_rgba_unmultiplied([w, h], rgba),
                egui::TextureOptions::LINEAR,
            ),
            rect,
            opacity,
        });
    }

    /// Changes the opacity of the layer, if there is one.
    pub fn set_layer_opacity(&mut self, opacity: f32) {
        if let Some(l) = &mut self.layer {
            l.opacity = opacity;
        }
    }

    pub fn has_layer(&self) -> bool {
        self.layer.is_some()
    }

    /// Replaces the image with an 8-bit grayscale buffer.
    pub fn set_gray(&mut self, ctx: &egui::Context, w: usize, h: usize, gray: &[u8]) {
        self.set_color_image(ctx, ColorImage::from_gray([w, h], gray));
    }

    /// Shows a (possibly binned) RGBA texture as an image of `image_size` pixels: overlays and
    /// readouts stay in full-resolution image coordinates.
    pub fn set_rgba_scaled(
        &mut self,
        ctx: &egui::Context,
        image_size: [usize; 2],
        w: usize,
        h: usize,
        rgba: &[u8],
    ) {
        self.set_color_image_sized(
            ctx,
            ColorImage::from_rgba_unmultiplied([w, h], rgba),
            image_size,
        );
    }

    /// The image rectangle in view `[x, y, w, h]` (pixels), if an image is shown.
    pub fn visible_region(&self) -> Option<[usize; 4]> {
        let r = self.last_rect?;
        self.texture.as_ref()?;
        let a = self.screen_to_image(r, r.min);
        let b = self.screen_to_image(r, r.max);
        let x0 = a[0].clamp(0.0, self.size[0] as f64) as usize;
        let y0 = a[1].clamp(0.0, self.size[1] as f64) as usize;
        let x1 = b[0].clamp(0.0, self.size[0] as f64) as usize;
        let y1 = b[1].clamp(0.0, self.size[1] as f64) as usize;
        (x1 > x0 && y1 > y0).then_some([x0, y0, x1 - x0, y1 - y0])
    }

    fn set_color_image(&mut self, ctx: &egui::Context, img: ColorImage) {
        let size = img.size;
        self.set_color_image_sized(ctx, img, size);
    }

    fn set_color_image_sized(
        &mut self,
        ctx: &egui::Context,
        img: ColorImage,
        image_size: [usize; 2],
    ) {
        let new_size = image_size;
        if new_size != self.size {
            self.fit_pending = true;
        }
        self.size = new_size;
        // Nearest-neighbour when magnified: microscopists want to see pixels, not blur.
        let opts = TextureOptions {
            magnification: egui::TextureFilter::Nearest,
            minification: egui::TextureFilter::Linear,
            ..Default::default()
        };
        match &mut self.texture {
            Some(t) => t.set(img, opts),
            None => self.texture = Some(ctx.load_texture(self.id.clone(), img, opts)),
        }
    }

    pub fn fit(&mut self) {
        self.fit_pending = true;
    }

    /// 1 image pixel = 1 screen point (physical pixel at scale 1).
    pub fn one_to_one(&mut self) {
        self.zoom = 1.0;
        self.auto_fit = false;
    }

    pub fn zoom(&self) -> f32 {
        self.zoom
    }

    /// Centres the view on a box and zooms so it fills about a third of the canvas.
    pub fn focus_on(&mut self, b: &OrientedBox) {
        self.centre = [b.cx, b.cy];
        if let Some(r) = self.last_rect {
            let extent = b.w.max(b.h).max(8.0) as f32;
            self.zoom = (r.width().min(r.height()) / (3.0 * extent)).clamp(0.05, 64.0);
        }
        self.fit_pending = false;
        self.auto_fit = false;
    }

    fn do_fit(&mut self, rect: Rect) {
        let (w, h) = (self.size[0].max(1) as f32, self.size[1].max(1) as f32);
        self.zoom = (rect.width() / w).min(rect.height() / h).max(1e-3);
        self.centre = [w as f64 / 2.0, h as f64 / 2.0];
        self.fit_pending = false;
        self.auto_fit = true;
    }

    pub fn image_to_screen(&self, rect: Rect, p: Pt) -> Pos2 {
        let c = rect.center();
        Pos2::new(
            c.x + ((p[0] - self.centre[0]) as f32) * self.zoom,
            c.y + ((p[1] - self.centre[1]) as f32) * self.zoom,
        )
    }

    pub fn screen_to_image(&self, rect: Rect, s: Pos2) -> Pt {
        let c = rect.center();
        [
            self.centre[0] + ((s.x - c.x) / self.zoom) as f64,
            self.centre[1] + ((s.y - c.y) / self.zoom) as f64,
        ]
    }

    /// Draws the canvas filling the available space. `pan_with_primary` is off while a tool
    /// (box editing) owns the primary button; panning then uses the middle/secondary button.
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        boxes: &[OverlayBox],
        pan_with_primary: bool,
    ) -> CanvasResponse {
        let size = ui.available_size().max(Vec2::new(64.0, 64.0));
        let (response, painter) = ui.allocate_painter(size, Sense::click_and_drag());
        let rect = response.rect;
        let resized = self.last_rect.is_some_and(|r| r.size() != rect.size());
        self.last_rect = Some(rect);
        painter.rect_filled(rect, 0.0, Color32::from_gray(24));
        let mut out = CanvasResponse::default();
        let Some(tex_id) = self.texture.as_ref().map(|t| t.id()) else {
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "No image",
                egui::FontId::proportional(16.0),
                Color32::GRAY,
            );
            out.response = Some(response);
            return out;
        };
        if self.fit_pending || (self.auto_fit && resized) {
            self.do_fit(rect);
        }
        // Zoom around the pointer.
        if response.hovered() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = pinch * (scroll / 300.0).exp();
            if (factor - 1.0).abs() > 1e-4
                && let Some(hp) = response.hover_pos()
            {
                let before = self.screen_to_image(rect, hp);
                self.auto_fit = false;
                self.zoom = (self.zoom * factor).clamp(0.02, 64.0);
                let after = self.screen_to_image(rect, hp);
                self.centre[0] += before[0] - after[0];
                self.centre[1] += before[1] - after[1];
            }
        }
        let pan = (pan_with_primary && response.dragged_by(egui::PointerButton::Primary))
            || response.dragged_by(egui::PointerButton::Middle)
            || response.dragged_by(egui::PointerButton::Secondary);
        if pan {
            let d = response.drag_delta();
            if d != Vec2::ZERO {
                self.auto_fit = false;
            }
            self.centre[0] -= (d.x / self.zoom) as f64;
            self.centre[1] -= (d.y / self.zoom) as f64;
        }
        if response.double_clicked() {
            self.do_fit(rect);
        }
        let top_left = self.image_to_screen(rect, [0.0, 0.0]);
        let bottom_right = self.image_to_screen(rect, [self.size[0] as f64, self.size[1] as f64]);
        let painter = painter.with_clip_rect(rect);
        painter.image(
            tex_id,
            Rect::from_min_max(top_left, bottom_right),
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        if let Some(l) = &self.layer {
            let a = self.image_to_screen(rect, [l.rect[0], l.rect[1]]);
            let b = self.image_to_screen(rect, [l.rect[2], l.rect[3]]);
            painter.image(
                l.texture.id(),
                Rect::from_min_max(a, b),
                Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                Color32::from_white_alpha((l.opacity.clamp(0.0, 1.0) * 255.0) as u8),
            );
        }

        let pointer = response.hover_pos().map(|p| self.screen_to_image(rect, p));
        out.pointer_image_pos = pointer.filter(|p| {
            p[0] >= 0.0 && p[1] >= 0.0 && p[0] < self.size[0] as f64 && p[1] < self.size[1] as f64
        });
        // The smallest box under the pointer wins (boundaries are big, point defects small).
        out.hovered_box = pointer.and_then(|p| {
            boxes
                .iter()
                .enumerate()
                .filter(|(_, b)| b.obb.contains(p))
                .min_by(|a, b| a.1.obb.area().total_cmp(&b.1.obb.area()))
                .map(|(i, _)| i)
        });
        for (i, b) in boxes.iter().enumerate() {
            let col = class_color32(b.class);
            let hovered = out.hovered_box == Some(i);
            let width = if hovered { 3.0 } else { 1.8 };
            let pts = paint_box(&painter, &b.obb, b.class, width, |c| {
                self.image_to_screen(rect, c)
            });
            if let Some(cap) = &b.caption {
                let top = pts
                    .iter()
                    .cloned()
                    .min_by(|a, b| a.y.total_cmp(&b.y))
                    .unwrap_or(pts[0]);
                let galley = painter.layout_no_wrap(
                    cap.clone(),
                    egui::FontId::proportional(11.0),
                    Color32::BLACK,
                );
                let bg = caption_rect(top, galley.size() + Vec2::new(4.0, 2.0), rect);
                painter.rect_filled(bg, 2.0, col);
                painter.galley(bg.min + Vec2::new(2.0, 1.0), galley, Color32::BLACK);
            }
        }
        if let Some(i) = out.hovered_box {
            if response.clicked() {
                out.clicked_box = Some(i);
            }
            let tip = boxes[i].tooltip.clone();
            response.clone().on_hover_ui_at_pointer(|ui| {
                ui.label(tip);
            });
        }
        out.response = Some(response);
        out
    }
}

/// Where a box's caption goes: above the box's top corner, moved inside `canvas` where it
/// would stick out (a box at the frame's right edge kept only the first letters of its class).
fn caption_rect(top: Pos2, size: Vec2, canvas: Rect) -> Rect {
    let min = top - Vec2::new(0.0, size.y);
    let max_x = (canvas.max.x - size.x).max(canvas.min.x);
    let max_y = (canvas.max.y - size.y).max(canvas.min.y);
    Rect::from_min_size(
        Pos2::new(
            min.x.clamp(canvas.min.x, max_x),
            min.y.clamp(canvas.min.y, max_y),
        ),
        size,
    )
}

#[cfg(test)]
mod caption_tests {
    use super::caption_rect;
    use egui::{Pos2, Rect, Vec2};

    #[test]
    fn a_caption_stays_inside_the_canvas() {
        let canvas = Rect::from_min_max(Pos2::new(0.0, 0.0), Pos2::new(200.0, 100.0));
        let size = Vec2::new(60.0, 14.0);
        // Room above the box's corner: the caption sits on it.
        let r = caption_rect(Pos2::new(50.0, 50.0), size, canvas);
        assert_eq!(r.min, Pos2::new(50.0, 36.0));
        // At the right edge it moves left, at the top edge down, and stays whole.
        let r = caption_rect(Pos2::new(190.0, 5.0), size, canvas);
        assert_eq!(r.min, Pos2::new(140.0, 0.0));
        assert!(canvas.contains_rect(r));
        // A canvas narrower than the caption keeps its left end in view.
        let tiny = Rect::from_min_max(Pos2::new(10.0, 0.0), Pos2::new(40.0, 100.0));
        assert_eq!(caption_rect(Pos2::new(30.0, 50.0), size, tiny).min.x, 10.0);
    }
}

#[cfg(test)]
mod fit_tests {
    use super::ImageCanvas;
    use egui_kittest::Harness;

    #[test]
    fn the_automatic_fit_follows_the_canvas_until_the_user_zooms() {
        let mut h = Harness::builder()
            .with_size(egui::vec2(400.0, 300.0))
            .build_ui_state(
                |ui, c: &mut ImageCanvas| {
                    if c.size == [0, 0] {
                        c.set_gray(ui.ctx(), 100, 100, &[0u8; 10_000]);
                    }
                    c.show(ui, &[], true);
                },
                ImageCanvas::new("fit-test"),
            );
        h.run_steps(2);
        let small = h.state().zoom();
        // The layout grows (panels settling, a bigger window): the fit follows.
        h.set_size(egui::vec2(800.0, 600.0));
        h.run_steps(2);
        assert!(
            h.state().zoom() > 1.5 * small,
            "{} vs {small}",
            h.state().zoom()
        );
        // After the user sets the zoom, a resize leaves it alone.
        h.state_mut().one_to_one();
        h.set_size(egui::vec2(400.0, 300.0));
        h.run_steps(2);
        assert_eq!(h.state().zoom(), 1.0);
    }
}
