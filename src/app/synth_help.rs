//! Hover help for every parameter of the Synthesize tab: what it means, its units, and the
//! values real HAADF-STEM frames show (from `realism` on the frames in `../shared/samples` and
//! the literature summarised in the project's field notes).

/// The help text of the control labelled `label` (an empty string for an unknown label; a test
/// checks that every label of the tab has one).
pub fn param_help(label: &str) -> &'static str {
    match label {
        "Z exponent n (I ~ Z^n)" => {
            "HAADF intensity of a column grows as Z^n. n ≈ 1.6–2.0 for high-angle detectors \
             (1.7 typical); lower inner angles give smaller n."
        }
        "Z" => "Atomic number of this species.",
        "cell a_u (Å)" => "Projected cell length along u (image x before rotation), in Å.",
        "cell b_v (Å)" => "Projected cell length along v, in Å.",
        "width (px)" | "height (px)" => "Image size in pixels. Real frames: 512–4096.",
        "pixel size (pm/px)" => {
            "Sampling in picometres per pixel. Atomic-resolution frames: 5–30 pm/px (the real \
             samples here: 9–16 pm/px)."
        }
        "rotation (°)" => "In-plane rotation of the lattice, degrees.",
        "whole-dumbbell fraction" => {
            "Share of vacancies that remove both columns of a dumbbell (the rest remove one)."
        }
        "partial-occupancy fraction" => {
            "Share of vacancies that leave part of the column (a vacancy in a thick column \
             removes only some atoms along the beam)."
        }
        "remaining occupancy" => "Fraction of the column left by a partial vacancy.",
        "vacancies" => "Number of vacancies per image (a range: drawn per image).",
        "interstitials" => "Number of interstitial columns per image (a range).",
        "interstitial occupancy" => {
            "Intensity of an interstitial column relative to a full column of its species."
        }
        "Σ3 twin boundaries" => {
            "Coherent Σ3 twins: the lattice mirrored across a {111} plane (70.5° between the \
             dumbbell directions in [110])."
        }
        "tilt boundaries" => "General tilt grain boundaries per image.",
        "tilt misorientation (°)" => "Misorientation across a tilt boundary, degrees.",
        "twin lamellae" => "Pairs of parallel twin planes enclosing a thin twinned band.",
        "lamella thickness (nm)" => "Thickness of a twin lamella, nm (real: 0.3–5 nm).",
        "tilt boundaries near an axis" => {
            "Fraction of tilt boundaries running within 8° of an image axis, as real boundaries \
             often do."
        }
        "edge margin (px)" => "Point defects are kept this far from the image edges.",
        "bending (Å)" => {
            "Largest column shift along the boundary from lattice bending; real tilt boundaries \
             bend the lattice over a few nm."
        }
        "bending decay (nm)" => "Distance over which the bending fades into the grain.",
        "core disorder (Å RMS)" => "Random column displacement in the boundary core.",
        "core half-width (Å)" => "Half-width of the disordered core.",
        "band darkening" => {
            "Loss of column intensity in the boundary band (dechannelling); negative brightens."
        }
        "band half-width (Å)" => "Half-width of the darkened band.",
        "twins get ×" => {
            "Twins are far more ordered than tilt boundaries: their strain and disorder are scaled by this."
        }
        "column width σ (Å)" => {
            "Gaussian width of each column's object (thermal vibration and channelling spread), \
             convolved with the probe. 0.2–0.8 Å; broad columns merge the dumbbells as in thick \
             real specimens (real CdTe: column FWHM ≈ 1.4 Å)."
        }
        "amorphous layer (RMS)" => {
            "Texture of amorphous surface layers, as a fraction of a column peak (FIB-prepared \
             specimens: 0.05–0.25)."
        }
        "its correlation length (Å)" => "Correlation length of the amorphous texture.",
        "background" => {
            "Constant background as a fraction of a column peak. Real HAADF frames: 0.3–7 \
             (p1/median 0.25–0.9 measured on the samples)."
        }
        "background gradient" => "Linear change of the background across the frame.",
        "thickness variation" => "Slow relative change of column intensity (specimen thickness).",
        "its wavelength (nm)" => "Length scale of the thickness variation.",
        "voltage (kV)" => "Accelerating voltage (sets the electron wavelength). 60–300 kV.",
        "aperture (mrad)" => "Probe-forming semi-angle. 20–35 mrad on aberration-corrected STEMs.",
        "Cs (µm)" => "Spherical aberration. Corrected: a few µm; uncorrected: ~1 mm.",
        "defocus C1 (Å)" => "Defocus; within ±30 Å of the optimum in good frames.",
        "source size σ (Å)" => "Effective source size (blurs the probe). 0.2–0.6 Å.",
        "FWHM (Å)" => "Width of a Gaussian probe (instead of the aberration model).",
        "directional blur σ (Å)" => {
            "Extra blur along one direction (residual astigmatism, drift during a pixel). Real \
             frames often show 0.2–0.8 Å."
        }
        "its direction (° from x)" => "Direction of the directional blur.",
        "HAADF collection at a column" => {
            "Fraction of the beam scattered into the detector at a column peak (sets the counts)."
        }
        "dose (e-/Å²)" => {
            "Electron dose per Å² (sets shot noise). Beam-sensitive imaging 10²–10³, routine \
             HAADF 10⁴–10⁶."
        }
        "counts at a column peak" => "Detector counts at a column peak (scales the image).",
        "read noise (counts RMS)" => "Gaussian detector read noise.",
        "line jitter (px RMS)" => {
            "Random shift of each scan line (stage/stray-field noise). Real: 0.1–1 px RMS."
        }
        "jitter line-to-line correlation" => "Correlation of the shift from one line to the next.",
        "jitter bursts (per 1000 lines)" => "Short runs of strongly torn lines.",
        "burst jitter (px RMS)" => "Shift within a burst.",
        "burst length (lines)" => "Length of a burst.",
        "drift x (px/1000 lines)" | "drift y (px/1000 lines)" => {
            "Specimen drift during the frame: shear (x) or stretch (y) of the lattice. Real: up to \
             ±100 px per 1000 lines."
        }
        "stray-field wobble (px)" => "Sinusoidal line shift from mains stray fields.",
        "wobble period (lines)" => "Period of the wobble in lines.",
        "flyback streak" => "Brightness of the streak after the flyback at each line start.",
        "flyback length (px)" => "Length of the flyback streak.",
        "detector afterglow (px)" => "Exponential smear along the fast-scan direction.",
        "point-defect box margin" => {
            "Point-defect labels are one projected cell, grown by this fraction."
        }
        "boundary box width (Å)" => "Width of a boundary label box (10 Å: the disordered band).",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::param_help;

    /// Every label of a slider or range control in the Synthesize tab's source has help.
    #[test]
    fn every_parameter_of_the_synthesize_tab_has_help() {
        let src = include_str!("synth_tab.rs");
        let mut labels = Vec::new();
        for part in src.split(".text(\"").skip(1) {
            labels.push(part.split('"').next().unwrap().to_string());
        }
        for head in ["count_range(", "span_range("] {
            for part in src.split(head).skip(1) {
                if let Some(q) = part.split('"').nth(1) {
                    labels.push(q.to_string());
                }
            }
        }
        assert!(labels.len() > 50, "{labels:?}");
        let missing: Vec<&String> = labels.iter().filter(|l| param_help(l).is_empty()).collect();
        assert!(missing.is_empty(), "no help for {missing:?}");
    }
}
