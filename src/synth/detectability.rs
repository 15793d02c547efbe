//! How visible each point defect is at its frame's dose: the signal-to-noise ratio of the
//! ideal observer that knows the defect and where it is (Rose's criterion; Barrett & Myers,
//! *Foundations of Image Science*, ch. 13).
//!
//! For a signal Δ(x) (the expected counts with the defect minus those without) in independent
//! noise of variance σ²(x) (shot noise of the expected counts, averaged over the frames with
//! and without the defect, plus read noise) the prewhitening matched filter reaches
//! `d′² = Σ Δ(x)² / σ²(x)`, summed over the defect's label box. A
//! linear filter applied to the whole frame (the low-pass, afterglow) changes neither: it
//! correlates the noise, and the ideal observer undoes it, so `d′` is measured before them.
//!
//! No detector, human or network, finds a defect the ideal observer cannot: below `d′` ≈ 5
//! (Rose's constant, for a defect whose place is not known) a label asks for what the frame
//! does not hold. `export --min-detectability` leaves such labels out.

use super::scene::DefectLabel;
use super::{Synthesized, imaging, render_signal};
use crate::classes::DefectClass;

/// Rose's criterion: the SNR a defect needs to be told from noise when its place is not known.
pub const ROSE_SNR: f64 = 5.0;

/// `d′` of every label of `s`, in order: `None` for boundaries (extended objects, seen at any
/// dose the lattice itself is seen at), `Some` for vacancies and interstitials.
pub fn label_snr(s: &Synthesized) -> Vec<Option<f64>> {
    let p = &s.params;
    let (w, h) = (p.width, p.height);
    // render_scene does not keep its noiseless image (it would double every frame's memory),
    // so it is rendered again here, on request only.
    let with = render_signal(p, &s.scene);
    let mut bare = s.scene.clone();
    bare.defects.clear();
    let without = render_signal(p, &bare);
    let mut quiet = p.clone();
    quiet.noise.enabled = false;
    quiet.scan.afterglow_px = 0.0;
    let expected = imaging::detect(&with, &s.scene, &quiet);
    let expected_bare = imaging::detect(&without, &bare, &quiet);
    let scale = imaging::counts_per_unit(p);
    let read_var = p.noise.read_noise.powi(2);
    // d′ is what the dose allows, measured on the frame as recorded: a resampled frame's
    // labels are drawn again in the recorded pixels (the same labels in the same order).
    let recorded = match p.resample_to {
        Some(_) => super::scene::scene_labels(&p.crystal.spec(), &s.scene, p),
        None => s.labels.clone(),
    };
    recorded
        .iter()
        .map(|l: &DefectLabel| {
            if l.class == DefectClass::GrainBoundary {
                return None;
            }
            let [x0, y0, x1, y1] = l.obb.aabb();
            let rows = (y0.floor().max(0.0) as usize)..(y1.ceil().clamp(0.0, h as f64) as usize);
            let cols = (x0.floor().max(0.0) as usize)..(x1.ceil().clamp(0.0, w as f64) as usize);
            let mut d2 = 0.0;
            for r in rows {
                for c in cols.clone() {
                    if !l.obb.contains([c as f64 + 0.5, r as f64 + 0.5]) {
                        continue;
                    }
                    let i = r * w + c;
                    let delta = scale * (with.data[i] - without.data[i]) as f64;
                    let var = 0.5 * (expected.data[i] + expected_bare.data[i]) as f64 + read_var;
                    if var > 0.0 {
                        d2 += delta * delta / var;
                    }
                }
            }
            Some(d2.sqrt())
        })
        .collect()
}
