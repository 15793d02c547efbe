//! Small widgets shared by the tabs.

use defect_detector::classes::{DefectClass, class_color};
use defect_detector::jobs::Job;
use defect_detector::synth::params::{CountRange, Span};
use egui::{Color32, RichText};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::canvas::ImageCanvas;

/// Class toggles in class colours, with counts.
pub fn class_legend(ui: &mut egui::Ui, show: &mut [bool], counts: &[usize]) {
    for c in DefectClass::ALL {
        let i = c.id();
        if i >= show.len() {
            break;
        }
        let [r, g, b] = class_color(i);
        let n = counts.get(i).copied().unwrap_or(0);
        ui.checkbox(
            &mut show[i],
            RichText::new(format!("{} ({n})", c.name())).color(Color32::from_rgb(r, g, b)),
        );
    }
}

/// A key to the box colours: a small outline in each class colour and the class name.
pub fn class_key(ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        for c in DefectClass::ALL {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(18.0, 12.0), egui::Sense::hover());
            ui.painter().rect_stroke(
                rect.shrink(1.0),
                0.0,
                egui::Stroke::new(2.0, super::canvas::class_color32(c.id())),
                egui::StrokeKind::Inside,
            );
            ui.label(c.name());
            ui.add_space(8.0);
        }
    });
}

/// A min–max pair of counts.
pub fn count_range(
    ui: &mut egui::Ui,
    label: &str,
    c: &mut CountRange,
    bounds: RangeInclusive<u32>,
) {
    ui.horizontal(|ui| {
        field_look(ui);
        ui.add(
            egui::DragValue::new(&mut c.min)
                .range(bounds.clone())
                .prefix("min "),
        );
        ui.add(
            egui::DragValue::new(&mut c.max)
                .range(bounds)
                .prefix("max "),
        );
        label_with_help(ui, label);
    });
    if c.max < c.min {
        c.max = c.min;
    }
}

/// Number fields drawn as fields (the sunken text-field colour and a frame), not as buttons:
/// they are typed into or dragged.
fn field_look(ui: &mut egui::Ui) {
    let v = ui.visuals_mut();
    let field = v.extreme_bg_color;
    let stroke = v.widgets.noninteractive.bg_stroke;
    v.widgets.inactive.weak_bg_fill = field;
    v.widgets.inactive.bg_fill = field;
    v.widgets.inactive.bg_stroke = stroke;
}

/// A range's label, with the parameter's help on hover when it has one.
fn label_with_help(ui: &mut egui::Ui, label: &str) {
    let help = super::synth_help::param_help(label);
    let r = ui.label(label);
    if !help.is_empty() {
        r.on_hover_text(help);
    }
}

/// A min–max pair of reals.
pub fn span_range(ui: &mut egui::Ui, label: &str, s: &mut Span, bounds: RangeInclusive<f64>) {
    span_range_speed(ui, label, s, bounds, 0.01);
}

/// A min–max pair of reals dragged at a step suited to the quantity.
pub fn span_range_speed(
    ui: &mut egui::Ui,
    label: &str,
    s: &mut Span,
    bounds: RangeInclusive<f64>,
    speed: f64,
) {
    ui.horizontal(|ui| {
        field_look(ui);
        ui.add(
            egui::DragValue::new(&mut s.min)
                .range(bounds.clone())
                .speed(speed)
                .prefix("min "),
        );
        ui.add(
            egui::DragValue::new(&mut s.max)
                .range(bounds)
                .speed(speed)
                .prefix("max "),
        );
        label_with_help(ui, label);
    });
    if s.max < s.min {
        s.max = s.min;
    }
}

/// A folder path field with a "Browse…" button. The native dialog runs on a worker thread so
/// the UI keeps drawing; returns the job when the user asked for the dialog.
pub fn folder_picker(
    ui: &mut egui::Ui,
    path: &mut String,
    picking: bool,
) -> Option<Job<Option<PathBuf>>> {
    let mut job = None;
    ui.horizontal(|ui| {
        ui.add(
            egui::TextEdit::singleline(path)
                .desired_width(200.0)
                .hint_text("folder"),
        )
        .on_hover_text("Output folder");
        if ui
            .add_enabled(!picking, egui::Button::new("Browse…"))
            .clicked()
        {
            let start = PathBuf::from(path.clone());
            job = Some(Job::spawn("pick-folder", None, move |_| {
                Ok(rfd::FileDialog::new().set_directory(start).pick_folder())
            }));
        }
    });
    job
}

/// A calibrated scale bar in the lower left of an image canvas (`rect`, `zoom` screen points
/// per image pixel), about a fifth of the visible width, with a round length.
pub fn scale_bar(ui: &egui::Ui, rect: egui::Rect, zoom: f32, nm_per_px: f64) {
    use egui::Color32;
    let visible_w = (rect.width() / zoom) as usize;
    let Some(bar) = defect_detector::formats::display::scale_bar(nm_per_px, visible_w.max(1), 0.2)
    else {
        return;
    };
    let len = bar.length_px as f32 * zoom;
    let p0 = rect.left_bottom() + egui::vec2(20.0, -24.0);
    let painter = ui.painter_at(rect);
    painter.rect_filled(
        egui::Rect::from_min_size(p0 - egui::vec2(8.0, 22.0), egui::vec2(len + 16.0, 32.0)),
        3.0,
        Color32::from_black_alpha(150),
    );
    painter.line_segment(
        [p0, p0 + egui::vec2(len, 0.0)],
        egui::Stroke::new(4.0, Color32::WHITE),
    );
    painter.text(
        p0 + egui::vec2(len / 2.0, -6.0),
        egui::Align2::CENTER_BOTTOM,
        &bar.label,
        egui::FontId::proportional(14.0),
        Color32::WHITE,
    );
}

/// "Fit" and "1:1" zoom buttons for a canvas; `what` names its content in the hover text.
pub fn zoom_buttons(ui: &mut egui::Ui, canvas: &mut ImageCanvas, what: &str) {
    if ui
        .button("Fit")
        .on_hover_text(format!("Fit the {what} to the canvas (double-click)"))
        .clicked()
    {
        canvas.fit();
    }
    if ui
        .button("1:1")
        .on_hover_text("One image pixel per screen pixel (the wheel zooms at the pointer)")
        .clicked()
    {
        canvas.one_to_one();
    }
}
