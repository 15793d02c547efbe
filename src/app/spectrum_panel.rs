//! The Viewer's power spectrum, laid out as a microscopist reads one in DigitalMicrograph or
//! Velox: docked beside the image (or floating), zoomed to the centre where the lattice spots
//! are, with a frequency axis, spots marked by clicking and listed with their spacing and
//! direction, and the pixel size calibrated from a spot of a known crystal.
//!
//! The arithmetic (snapping, frequencies, spacings, calibration) is `formats::fft` and
//! `synth::crystal`; this file only draws and routes clicks.

use super::viewer_jobs::Spectrum;
use defect_detector::formats::fft::{self, SpatialFrequency, SpectrumSpot};
use defect_detector::synth::crystal::{Preset, Reflection, nearest_reflection};
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

/// Where the panel sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpectrumDock {
    /// A side panel right of the image: never covers the controls or the image.
    #[default]
    Right,
    /// A window that can be moved anywhere (first placed at the right edge).
    Floating,
}

/// What the Viewer must do after the panel was drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpectrumAction {
    /// Compute the spectrum of the part of the image now in view.
    Recompute,
    /// Set the image's pixel size (nm/px) as a user override, as typing it does.
    SetPixelSize {
        nm_per_px: f64,
        reflection: Reflection,
    },
}

/// What the panel reads from the Viewer each frame.
pub struct SpectrumInputs<'a> {
    pub spectrum: Option<&'a Spectrum>,
    pub busy: bool,
    pub nm_per_px: Option<f64>,
    pub crystal: Preset,
}

/// One marked spot as the table lists it.
#[derive(Clone, Copy, Debug)]
pub struct SpotRow {
    /// In 1/nm and nm with a pixel size; in 1/px and px without.
    pub frequency: SpatialFrequency,
    pub calibrated: bool,
}

impl SpotRow {
    /// The spacing as the table shows it: Å when calibrated, px otherwise.
    pub fn d_text(&self) -> String {
        if self.calibrated {
            format!("{:.3} Å", self.frequency.d_spacing_nm * 10.0)
        } else {
            format!("{:.2} px", self.frequency.d_spacing_nm)
        }
    }

    pub fn g_text(&self) -> String {
        if self.calibrated {
            format!("{:.3}", self.frequency.magnitude)
        } else {
            format!("{:.4}", self.frequency.magnitude)
        }
    }
}

/// Screen space around the spectrum for the axis labels.
const LEFT_AXIS: f32 = 40.0;
const BOTTOM_AXIS: f32 = 30.0;
/// How far from a click (screen pixels) a spot is looked for, before the bin limits.
const SNAP_SCREEN_PX: f32 = 6.0;
const MARK_COLOR: Color32 = Color32::from_rgb(86, 180, 233);
/// Zoom when there is no pixel size to choose one from.
const UNCALIBRATED_ZOOM: f64 = 4.0;

pub struct SpectrumPanel {
    pub open: bool,
    pub dock: SpectrumDock,
    /// The view shows the central `1/zoom` of each axis of the spectrum.
    pub zoom: f64,
    /// The zoom follows the crystal and pixel size until the user sets one.
    zoom_by_user: bool,
    /// Marked spots of the spectrum shown, in the order they were clicked.
    pub marks: Vec<SpectrumSpot>,
    /// [`Spectrum::version`] the marks were made on: a new spectrum clears them.
    marks_for: u64,
    calibrate_mark: usize,
    calibrate_reflection: usize,
    /// Where the spectrum was last drawn, to place clicks (and, in tests, to aim them).
    last_view: Option<SpectrumView>,
}

impl Default for SpectrumPanel {
    fn default() -> Self {
        Self {
            open: false,
            dock: SpectrumDock::default(),
            zoom: UNCALIBRATED_ZOOM,
            zoom_by_user: false,
            marks: Vec::new(),
            marks_for: 0,
            calibrate_mark: 0,
            calibrate_reflection: 0,
            last_view: None,
        }
    }
}

/// Where the zoomed spectrum lies on screen, and the conversions both ways.
#[derive(Clone, Copy)]
struct SpectrumView {
    rect: Rect,
    size: usize,
    zoom: f64,
}

impl SpectrumView {
    /// The spectrum bins the view spans, on one axis.
    fn span(&self) -> f64 {
        self.size as f64 / self.zoom
    }

    /// Left/top edge of the view in spectrum edge coordinates (pixel `i` spans `i..i+1`);
    /// the view is centred on the middle of the zero-frequency pixel.
    fn low_edge(&self) -> f64 {
        (self.size / 2) as f64 + 0.5 - self.span() / 2.0
    }

    fn uv(&self) -> Rect {
        let n = self.size as f32;
        let lo = self.low_edge() as f32 / n;
        let hi = lo + self.span() as f32 / n;
        Rect::from_min_max(Pos2::new(lo, lo), Pos2::new(hi, hi))
    }

    fn bins_per_point(&self) -> f64 {
        self.span() / f64::from(self.rect.width())
    }

    /// Spectrum pixel coordinates (centres at integers) under a screen position.
    fn spectrum_at(&self, p: Pos2) -> (f64, f64) {
        let k = self.bins_per_point();
        (
            self.low_edge() + f64::from(p.x - self.rect.min.x) * k - 0.5,
            self.low_edge() + f64::from(p.y - self.rect.min.y) * k - 0.5,
        )
    }

    fn screen_at(&self, x: f64, y: f64) -> Pos2 {
        let k = self.bins_per_point();
        Pos2::new(
            self.rect.min.x + ((x + 0.5 - self.low_edge()) / k) as f32,
            self.rect.min.y + ((y + 0.5 - self.low_edge()) / k) as f32,
        )
    }
}

impl SpectrumPanel {
    /// The marked spots with their frequencies at the pixel size now in force (a calibration
    /// rereads them at once).
    pub fn rows(&self, spectrum: &Spectrum, nm_per_px: Option<f64>) -> Vec<SpotRow> {
        self.marks
            .iter()
            .map(|s| SpotRow {
                frequency: s.frequency(spectrum.size, nm_per_px),
                calibrated: nm_per_px.is_some(),
            })
            .collect()
    }

    /// Marks the spot a click at spectrum position `(x, y)` means (snapped to the brightest
    /// pixel within `radius` bins, refined to sub-pixel); false when there is none or it is
    /// already marked.
    pub fn mark_near(&mut self, spectrum: &Spectrum, x: f64, y: f64, radius: usize) -> bool {
        self.adopt(spectrum);
        let Some(spot) = fft::snap_to_spot(&spectrum.data, x, y, radius) else {
            return false;
        };
        if self
            .marks
            .iter()
            .any(|m| (m.x - spot.x).hypot(m.y - spot.y) < 1.0)
        {
            return false;
        }
        self.marks.push(spot);
        true
    }

    /// The screen position of spectrum pixel `(x, y)` as last drawn.
    #[cfg(test)]
    pub fn spectrum_to_screen(&self, x: f64, y: f64) -> Option<Pos2> {
        self.last_view.map(|v| v.screen_at(x, y))
    }

    /// Chooses the spot and reflection the calibration uses (as the two lists do).
    #[cfg(test)]
    pub fn choose_calibration(&mut self, mark: usize, reflection: usize) {
        self.calibrate_mark = mark;
        self.calibrate_reflection = reflection;
    }

    /// Forgets the marks of an older spectrum: they were positions in a different transform.
    fn adopt(&mut self, spectrum: &Spectrum) {
        if self.marks_for != spectrum.version {
            self.marks.clear();
            self.marks_for = spectrum.version;
        }
    }

    /// The zoom that shows the crystal's finest listed spot well inside the view.
    fn auto_zoom(nm_per_px: Option<f64>, crystal: Preset) -> f64 {
        let finest = crystal
            .zone_110_reflections()
            .iter()
            .map(|r| 1.0 / r.d_nm())
            .fold(0.0, f64::max);
        match nm_per_px {
            Some(nm) if finest > 0.0 => fft::auto_zoom(nm, finest),
            _ => UNCALIBRATED_ZOOM,
        }
    }

    /// Draws the panel (docked or floating) when open; what the Viewer must do follows.
    pub fn show(&mut self, ui: &mut egui::Ui, inputs: &SpectrumInputs) -> Vec<SpectrumAction> {
        let mut actions = Vec::new();
        if !self.open {
            return actions;
        }
        if !self.zoom_by_user {
            self.zoom = Self::auto_zoom(inputs.nm_per_px, inputs.crystal);
        }
        if let Some(s) = inputs.spectrum {
            self.adopt(s);
        }
        match self.dock {
            SpectrumDock::Right => {
                egui::Panel::right("viewer-spectrum")
                    .resizable(true)
                    .default_size(430.0)
                    .min_size(280.0)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical()
                            .id_salt("spectrum-scroll")
                            .show(ui, |ui| self.contents(ui, inputs, &mut actions));
                    });
            }
            SpectrumDock::Floating => {
                let mut open = true;
                let right = ui.ctx().content_rect().right_top();
                egui::Window::new("Power spectrum")
                    .open(&mut open)
                    .default_size([430.0, 640.0])
                    .default_pos(right + egui::vec2(-450.0, 40.0))
                    .show(ui.ctx(), |ui| {
                        egui::ScrollArea::vertical()
                            .id_salt("spectrum-scroll")
                            .show(ui, |ui| self.contents(ui, inputs, &mut actions));
                    });
                self.open &= open;
            }
        }
        actions
    }

    fn contents(
        &mut self,
        ui: &mut egui::Ui,
        inputs: &SpectrumInputs,
        actions: &mut Vec<SpectrumAction>,
    ) {
        ui.horizontal(|ui| {
            if self.dock == SpectrumDock::Right {
                ui.strong("Power spectrum");
            }
            if ui
                .button("Update to the view")
                .on_hover_text("Spectrum of the part of the image now in view")
                .clicked()
            {
                actions.push(SpectrumAction::Recompute);
            }
            let (label, other) = match self.dock {
                SpectrumDock::Right => ("Float", SpectrumDock::Floating),
                SpectrumDock::Floating => ("Dock right", SpectrumDock::Right),
            };
            if ui.button(label).clicked() {
                self.dock = other;
            }
            if self.dock == SpectrumDock::Right && ui.button("Close").clicked() {
                self.open = false;
            }
        });
        let Some(s) = inputs.spectrum else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing the spectrum…");
            });
            return;
        };
        ui.horizontal(|ui| {
            ui.small(format!(
                "region x {} y {} · {} × {} px · {} × {} FFT",
                s.region[0], s.region[1], s.region[2], s.region[3], s.size, s.size
            ));
            if inputs.busy {
                ui.spinner();
            }
        });
        ui.horizontal(|ui| {
            let r = ui.add(
                egui::Slider::new(
                    &mut self.zoom,
                    fft::MIN_SPECTRUM_ZOOM..=fft::MAX_SPECTRUM_ZOOM,
                )
                .logarithmic(true)
                .max_decimals(1)
                .text("zoom"),
            );
            if r.on_hover_text("Show the central 1/zoom of the spectrum (or scroll over it)")
                .changed()
            {
                self.zoom_by_user = true;
            }
            if ui
                .add_enabled(self.zoom_by_user, egui::Button::new("Auto"))
                .on_hover_text("Zoom so the crystal's finest spots sit well inside")
                .clicked()
            {
                self.zoom_by_user = false;
                self.zoom = Self::auto_zoom(inputs.nm_per_px, inputs.crystal);
            }
        });
        self.spectrum_view(ui, s, inputs.nm_per_px);
        ui.separator();
        self.table(ui, s, inputs.nm_per_px, inputs.crystal);
        ui.separator();
        self.calibration(ui, s, inputs, actions);
    }

    /// The zoomed spectrum with its axes and marks; click marks a spot, right-click removes
    /// the nearest mark, the wheel zooms.
    fn spectrum_view(&mut self, ui: &mut egui::Ui, s: &Spectrum, nm_per_px: Option<f64>) {
        let side = (ui.available_width() - LEFT_AXIS - 8.0).clamp(120.0, 640.0);
        let (outer, resp) = ui.allocate_exact_size(
            egui::vec2(side + LEFT_AXIS, side + BOTTOM_AXIS),
            Sense::click(),
        );
        let rect = Rect::from_min_size(outer.min + egui::vec2(LEFT_AXIS, 0.0), Vec2::splat(side));
        let view = SpectrumView {
            rect,
            size: s.size,
            zoom: self.zoom,
        };
        self.last_view = Some(view);
        let painter = ui.painter_at(outer);
        painter.image(s.texture.id(), rect, view.uv(), Color32::WHITE);
        self.axes(&painter, &view, nm_per_px, ui.visuals().text_color());
        // zero frequency
        let c = rect.center();
        let faint = Stroke::new(1.0, Color32::from_white_alpha(90));
        painter.line_segment([c - egui::vec2(5.0, 0.0), c + egui::vec2(5.0, 0.0)], faint);
        painter.line_segment([c - egui::vec2(0.0, 5.0), c + egui::vec2(0.0, 5.0)], faint);
        for (i, m) in self.marks.iter().enumerate() {
            let p = view.screen_at(m.x, m.y);
            if rect.contains(p) {
                painter.circle_stroke(p, 7.0, Stroke::new(1.5, MARK_COLOR));
                painter.text(
                    p + egui::vec2(8.0, -8.0),
                    egui::Align2::LEFT_BOTTOM,
                    (i + 1).to_string(),
                    egui::FontId::proportional(13.0),
                    MARK_COLOR,
                );
            }
        }

        let pointer = resp.hover_pos().filter(|p| rect.contains(*p));
        if let Some(p) = pointer {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.zoom = (self.zoom * f64::from(scroll / 200.0).exp())
                    .clamp(fft::MIN_SPECTRUM_ZOOM, fft::MAX_SPECTRUM_ZOOM);
                self.zoom_by_user = true;
                // the wheel zooms the spectrum, not the panel's scroll area
                ui.input_mut(|i| i.smooth_scroll_delta = Vec2::ZERO);
            }
            let (x, y) = view.spectrum_at(p);
            ui.small(hover_text(s.size, x, y, nm_per_px));
        } else {
            ui.small("click a spot to mark it · right-click removes · scroll zooms");
        }
        if resp.clicked()
            && let Some(p) = resp.interact_pointer_pos().filter(|p| rect.contains(*p))
        {
            let (x, y) = view.spectrum_at(p);
            let radius = (f64::from(SNAP_SCREEN_PX) * view.bins_per_point()).round() as usize;
            self.mark_near(s, x, y, radius.clamp(2, 8));
        }
        if resp.secondary_clicked()
            && let Some(p) = resp.interact_pointer_pos()
        {
            let nearest = self
                .marks
                .iter()
                .enumerate()
                .map(|(i, m)| (i, view.screen_at(m.x, m.y).distance(p)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, d)) = nearest
                && d < 12.0
            {
                self.marks.remove(i);
            }
        }
    }

    /// Frequency ticks below (fx) and left of (fy, up positive) the spectrum.
    fn axes(
        &self,
        painter: &egui::Painter,
        view: &SpectrumView,
        nm_per_px: Option<f64>,
        color: Color32,
    ) {
        let unit_px = nm_per_px.unwrap_or(1.0);
        // frequency units per spectrum bin
        let per_bin = 1.0 / (view.size as f64 * unit_px);
        let half = view.span() / 2.0 * per_bin;
        let ticks = fft::axis_ticks(half, 3);
        let step = ticks.get(1).map_or(1.0, |t| t - ticks[0]);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let rect = view.rect;
        let c = rect.center();
        let stroke = Stroke::new(1.0, color);
        let font = egui::FontId::proportional(11.0);
        let points_per_unit = (f64::from(rect.width()) / (2.0 * half)) as f32;
        for t in &ticks {
            let off = *t as f32 * points_per_unit;
            let label = format!("{:.*}", decimals, t.abs());
            let label = if *t < 0.0 { format!("-{label}") } else { label };
            let x = c.x + off;
            painter.line_segment(
                [Pos2::new(x, rect.max.y), Pos2::new(x, rect.max.y + 4.0)],
                stroke,
            );
            painter.text(
                Pos2::new(x, rect.max.y + 5.0),
                egui::Align2::CENTER_TOP,
                &label,
                font.clone(),
                color,
            );
            let y = c.y - off;
            painter.line_segment(
                [Pos2::new(rect.min.x - 4.0, y), Pos2::new(rect.min.x, y)],
                stroke,
            );
            painter.text(
                Pos2::new(rect.min.x - 6.0, y),
                egui::Align2::RIGHT_CENTER,
                &label,
                font.clone(),
                color,
            );
        }
        painter.text(
            Pos2::new(rect.max.x, rect.max.y + 17.0),
            egui::Align2::RIGHT_TOP,
            if nm_per_px.is_some() { "1/nm" } else { "1/px" },
            font,
            color,
        );
    }

    fn table(&mut self, ui: &mut egui::Ui, s: &Spectrum, nm_per_px: Option<f64>, crystal: Preset) {
        let rows = self.rows(s, nm_per_px);
        if rows.is_empty() {
            ui.label("No spots marked: click a lattice spot in the spectrum.");
            return;
        }
        let reflections = crystal.zone_110_reflections();
        let calibrated = nm_per_px.is_some();
        let mut remove = None;
        egui::Grid::new("spectrum-spots")
            .striped(true)
            .num_columns(7)
            .show(ui, |ui| {
                ui.strong("#");
                ui.strong(if calibrated { "|g| 1/nm" } else { "|g| 1/px" });
                ui.strong("d");
                ui.strong("angle")
                    .on_hover_text("Direction of g, counter-clockwise from the image's +x axis");
                ui.strong("to #1")
                    .on_hover_text("Angle between this spot's g and spot 1's (0–180°)");
                ui.strong("nearest").on_hover_text(format!(
                    "The {} reflection closest in spacing, and how far off",
                    crystal.label()
                ));
                ui.label("");
                ui.end_row();
                for (i, r) in rows.iter().enumerate() {
                    ui.label((i + 1).to_string());
                    ui.label(r.g_text());
                    ui.label(r.d_text());
                    ui.label(format!("{:.1}°", r.frequency.angle_deg));
                    if i == 0 {
                        ui.label("–");
                    } else {
                        ui.label(format!(
                            "{:.1}°",
                            fft::angle_between_deg(&rows[0].frequency, &r.frequency)
                        ));
                    }
                    match nearest_reflection(&reflections, r.frequency.d_spacing_nm * 10.0) {
                        Some((refl, err)) if calibrated => {
                            ui.label(format!("{} {:+.1} %", refl.label(), err * 100.0))
                        }
                        _ => ui.label("–"),
                    };
                    if ui
                        .small_button("x")
                        .on_hover_text("Remove this spot")
                        .clicked()
                    {
                        remove = Some(i);
                    }
                    ui.end_row();
                }
            });
        ui.small(
            "angle: direction of g (normal to the planes), counter-clockwise from +x (right) as \
             on screen; each spot's Friedel mate -g is 180° away",
        );
        if let Some(i) = remove {
            self.marks.remove(i);
        }
        if ui.button("Clear all").clicked() {
            self.marks.clear();
        }
    }

    fn calibration(
        &mut self,
        ui: &mut egui::Ui,
        s: &Spectrum,
        inputs: &SpectrumInputs,
        actions: &mut Vec<SpectrumAction>,
    ) {
        let reflections = inputs.crystal.zone_110_reflections();
        if reflections.is_empty() {
            ui.small("Calibration from a spacing needs a named crystal (Realism, crystal).");
            return;
        }
        ui.strong(format!(
            "Calibrate from a known spacing ({})",
            inputs.crystal.label()
        ));
        if self.marks.is_empty() {
            ui.small("Mark a spot, then say which reflection it is.");
            return;
        }
        self.calibrate_mark = self.calibrate_mark.min(self.marks.len() - 1);
        self.calibrate_reflection = self.calibrate_reflection.min(reflections.len() - 1);
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("is")
                .selected_text(format!("spot {}", self.calibrate_mark + 1))
                .show_ui(ui, |ui| {
                    for i in 0..self.marks.len() {
                        ui.selectable_value(&mut self.calibrate_mark, i, format!("spot {}", i + 1));
                    }
                });
            let text = |r: &Reflection| format!("{} d = {:.3} Å", r.label(), r.d_angstrom);
            egui::ComboBox::from_id_salt("spectrum-reflection")
                .selected_text(text(&reflections[self.calibrate_reflection]))
                .show_ui(ui, |ui| {
                    for (i, r) in reflections.iter().enumerate() {
                        ui.selectable_value(&mut self.calibrate_reflection, i, text(r));
                    }
                });
        });
        let reflection = reflections[self.calibrate_reflection];
        let radius = self.marks[self.calibrate_mark].radius(s.size);
        let Some(nm) = fft::pixel_size_from_spacing(radius, s.size, reflection.d_nm()) else {
            return;
        };
        let now = inputs
            .nm_per_px
            .map(|n| format!(" (now {:.2})", n * 1000.0))
            .unwrap_or_default();
        ui.label(format!("pixel size {:.2} pm/px{now}", nm * 1000.0));
        // How the other spots would read: a wrong choice shows as spots off every reflection.
        let others: Vec<String> = self
            .marks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.calibrate_mark)
            .filter_map(|(i, m)| {
                let d = m.frequency(s.size, Some(nm)).d_spacing_nm * 10.0;
                nearest_reflection(&reflections, d)
                    .map(|(r, err)| format!("spot {} {} {:+.1} %", i + 1, r.label(), err * 100.0))
            })
            .collect();
        if !others.is_empty() {
            ui.small(format!("then {}", others.join(" · ")));
        }
        if ui
            .button("Calibrate pixel size from this spacing")
            .on_hover_text("Set the image's pixel size as if typed (the pixel size field)")
            .clicked()
        {
            actions.push(SpectrumAction::SetPixelSize {
                nm_per_px: nm,
                reflection,
            });
        }
    }
}

/// The readout under the pointer: frequency, spacing and direction.
fn hover_text(size: usize, x: f64, y: f64, nm_per_px: Option<f64>) -> String {
    let spot = SpectrumSpot { x, y };
    let f = spot.frequency(size, nm_per_px);
    match nm_per_px {
        Some(_) => format!(
            "|g| {:.3} 1/nm · d {:.3} Å · {:.1}°",
            f.magnitude,
            f.d_spacing_nm * 10.0,
            f.angle_deg
        ),
        None => format!(
            "|g| {:.4} 1/px · period {:.2} px · {:.1}° (no pixel size)",
            f.magnitude, f.d_spacing_nm, f.angle_deg
        ),
    }
}

#[cfg(test)]
#[path = "spectrum_panel_tests.rs"]
mod tests;
