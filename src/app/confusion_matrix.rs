//! A confusion matrix drawn as a clickable heatmap, for any classifier the library scores
//! (rows: true class; columns: answer, the last one "no answer").
//!
//! Owns only the drawing and the click. It must not compute scores (the library's
//! [`ConfusionMatrix`] does) nor keep state: the caller holds the selection and the
//! counts/normalised choice. Colours come from the library's viridis, the one the Viewer uses.

use defect_detector::formats::display::Colormap;
use defect_detector::vlm::metrics::{ConfusionMatrix, NO_ANSWER};
use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, Vec2};

/// Accessible name of a cell; screen readers and tests find cells by it.
pub fn cell_label(classes: &[String], t: usize, p: usize) -> String {
    let pred = classes.get(p).map_or(NO_ANSWER, |s| s.as_str());
    format!("true {}, answered {pred}", classes[t])
}

/// Shows the matrix and returns the clicked cell (true class, answer column). Cells are
/// coloured by the row-normalised fraction whether they show counts or fractions, so colours
/// compare across rows and runs. `id_salt` keeps the cells of two matrices on one screen apart.
pub fn confusion_matrix(
    ui: &mut egui::Ui,
    matrix: &ConfusionMatrix,
    normalised: bool,
    selected: Option<(usize, usize)>,
    id_salt: &str,
) -> Option<(usize, usize)> {
    let classes = &matrix.classes;
    let nr = classes.len();
    let nc = nr + 1;
    let font = FontId::proportional(12.5);
    let text_w = |s: &str| {
        ui.fonts_mut(|f| {
            f.layout_no_wrap(s.to_string(), font.clone(), Color32::WHITE)
                .size()
                .x
        })
    };
    let row_label_w = classes.iter().map(|c| text_w(c)).fold(60.0, f32::max) + 10.0;
    let cell_w = classes
        .iter()
        .map(|c| text_w(c))
        .fold(text_w(NO_ANSWER), f32::max)
        .max(56.0)
        + 10.0;
    let cell_h = 34.0;
    let header_h = 22.0;
    let size = Vec2::new(
        row_label_w + nc as f32 * cell_w,
        header_h + nr as f32 * cell_h,
    );
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let fg = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    for c in 0..nc {
        let name = classes.get(c).map_or(NO_ANSWER, |s| s.as_str());
        let x = rect.left() + row_label_w + (c as f32 + 0.5) * cell_w;
        painter.text(
            egui::pos2(x, rect.top() + header_h / 2.0),
            Align2::CENTER_CENTER,
            name,
            font.clone(),
            if c < nr { fg } else { weak },
        );
    }
    let rn = matrix.row_normalised();
    let mut clicked = None;
    for t in 0..nr {
        let y = rect.top() + header_h + t as f32 * cell_h;
        painter.text(
            egui::pos2(rect.left() + row_label_w - 8.0, y + cell_h / 2.0),
            Align2::RIGHT_CENTER,
            &classes[t],
            font.clone(),
            fg,
        );
        for (p, (&frac, &count)) in rn[t].iter().zip(&matrix.counts[t]).enumerate() {
            let cell = Rect::from_min_size(
                egui::pos2(rect.left() + row_label_w + p as f32 * cell_w, y),
                Vec2::new(cell_w, cell_h),
            )
            .shrink(1.0);
            let [r, g, b] = Colormap::Viridis.color(frac);
            let fill = Color32::from_rgb(r, g, b);
            painter.rect_filled(cell, 3.0, fill);
            if p == t {
                painter.rect_stroke(
                    cell,
                    3.0,
                    Stroke::new(1.5, Color32::from_gray(230)),
                    egui::StrokeKind::Inside,
                );
            }
            if selected == Some((t, p)) {
                painter.rect_stroke(
                    cell.expand(1.0),
                    3.0,
                    Stroke::new(3.0, Color32::from_rgb(230, 159, 0)),
                    egui::StrokeKind::Outside,
                );
            }
            let text = if normalised {
                format!("{frac:.2}")
            } else {
                count.to_string()
            };
            painter.text(
                cell.center(),
                Align2::CENTER_CENTER,
                text,
                FontId::proportional(14.0),
                text_on(fill),
            );
            let label = cell_label(classes, t, p);
            let resp = ui
                .interact(cell, ui.make_persistent_id((id_salt, t, p)), Sense::click())
                .on_hover_text(format!(
                    "{label}: {count} patch(es), {:.1}% of the row",
                    frac * 100.0
                ));
            resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, label.clone()));
            if resp.clicked() {
                clicked = Some((t, p));
            }
        }
    }
    clicked
}

/// Black or white, whichever reads better on `c` (by its luma).
fn text_on(c: Color32) -> Color32 {
    let l = 0.299 * c.r() as f32 + 0.587 * c.g() as f32 + 0.114 * c.b() as f32;
    if l > 140.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}
