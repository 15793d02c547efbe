//! Projected crystal structures: atom columns of a crystal seen down a zone axis.
//!
//! A zinc-blende crystal (CdTe, GaAs, Si) seen along [110] projects onto a centred rectangular
//! net with cell `a/√2` along [1-10] (our `u`) and `a` along [001] (our `v`). The FCC lattice
//! points (0,0,0), (½,0,½) project to (0,0) and (½,½) in fractional cell coordinates; the
//! anion at (¼,¼,¼)a projects to (0, ¼): every cation column has an anion column `a/4` away
//! along [001], forming the "dumbbell", and polarity (cation below anion) is the same
//! everywhere in a perfect grain. The empty tetrahedral sites (½,½,½)a and (¾,¾,¾)a project to
//! (0, ½) and (0, ¾): the open channels between dumbbells, where interstitials sit.

use serde::{Deserialize, Serialize};

/// One kind of atom column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Species {
    pub symbol: String,
    /// Atomic number, which sets the HAADF contrast (∝ Zⁿ).
    pub z: f64,
}

/// An atom column of the basis, in fractional cell coordinates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub u: f64,
    pub v: f64,
    /// Index into [`CrystalSpec::species`].
    pub species: usize,
}

/// A projected crystal: a rectangular cell `a_u x b_v` (Å) with a basis of columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrystalSpec {
    pub name: String,
    /// Cell edge along the horizontal lattice direction (Å), [1-10] for a [110] projection.
    pub a_u: f64,
    /// Cell edge along the vertical lattice direction (Å), [001] for a [110] projection.
    pub b_v: f64,
    pub species: Vec<Species>,
    pub sites: Vec<Site>,
    /// Pairs of basis sites that form a dumbbell (for whole-dumbbell vacancies).
    pub dumbbells: Vec<[usize; 2]>,
    /// Empty sites of the projected structure where an interstitial column can sit
    /// (fractional coordinates).
    pub interstitial_sites: Vec<[f64; 2]>,
    /// Directions of mirror (twin) plane traces, as fractional lattice vectors `[du, dv]`
    /// (they must be lattice vectors so the plane passes through columns).
    pub twin_traces: Vec<[f64; 2]>,
}

/// The crystals the app knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    #[default]
    Cdte110,
    Si110,
    Gaas110,
    Custom,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Cdte110,
        Preset::Si110,
        Preset::Gaas110,
        Preset::Custom,
    ];

    /// The crystals with a fixed structure (not `Custom`).
    pub const NAMED: [Preset; 3] = [Preset::Cdte110, Preset::Si110, Preset::Gaas110];

    pub fn label(self) -> &'static str {
        match self {
            Preset::Cdte110 => "CdTe [110]",
            Preset::Si110 => "Si [110]",
            Preset::Gaas110 => "GaAs [110]",
            Preset::Custom => "Custom",
        }
    }

    pub fn cli_name(self) -> &'static str {
        match self {
            Preset::Cdte110 => "cdte110",
            Preset::Si110 => "si110",
            Preset::Gaas110 => "gaas110",
            Preset::Custom => "custom",
        }
    }

    pub fn from_cli_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.cli_name() == s)
    }

    /// A named crystal (not `custom`) for the lattice-reading commands, or a message listing
    /// the names.
    pub fn named_crystal(s: &str) -> anyhow::Result<Self> {
        Self::from_cli_name(s)
            .filter(|p| *p != Preset::Custom)
            .ok_or_else(|| anyhow::anyhow!("unknown crystal '{s}' (cdte110, si110, gaas110)"))
    }

    /// The structure of a named preset (`Custom` starts from CdTe for editing).
    pub fn spec(self) -> CrystalSpec {
        match self {
            Preset::Cdte110 | Preset::Custom => {
                zinc_blende_110("CdTe [110]", CDTE_A, ("Cd", 48.0), ("Te", 52.0))
            }
            Preset::Si110 => zinc_blende_110("Si [110]", SI_A, ("Si", 14.0), ("Si", 14.0)),
            Preset::Gaas110 => zinc_blende_110("GaAs [110]", GAAS_A, ("Ga", 31.0), ("As", 33.0)),
        }
    }

    /// The cubic lattice constant (Å) and structure of a named crystal; `None` for `Custom`,
    /// whose cell the user may have edited into something non-cubic.
    pub fn cubic_lattice(self) -> Option<(f64, CubicStructure)> {
        match self {
            Preset::Cdte110 => Some((CDTE_A, CubicStructure::ZincBlende)),
            Preset::Si110 => Some((SI_A, CubicStructure::Diamond)),
            Preset::Gaas110 => Some((GAAS_A, CubicStructure::ZincBlende)),
            Preset::Custom => None,
        }
    }

    /// The reflections a power spectrum of this crystal seen along [110] shows, widest
    /// spacing first (empty for `Custom`).
    pub fn zone_110_reflections(self) -> Vec<Reflection> {
        self.cubic_lattice()
            .map(|(a, s)| cubic_reflections(a, s, MAX_HKL_SQUARED))
            .unwrap_or_default()
            .into_iter()
            .filter(Reflection::in_zone_110)
            .collect()
    }
}

/// Lattice constants (Å) at room temperature.
const CDTE_A: f64 = 6.481;
const SI_A: f64 = 5.431;
const GAAS_A: f64 = 5.653;

/// Reflections up to {331}/{420} (h² + k² + l² = 20): the spots a HAADF image at
/// atomic resolution shows; finer ones are beyond the probe's transfer.
const MAX_HKL_SQUARED: u32 = 20;

/// Which cubic structure decides the allowed reflections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CubicStructure {
    /// FCC with a two-atom basis of different atoms (CdTe, GaAs): h, k, l all odd or all even.
    ZincBlende,
    /// The same with equal atoms (Si): the all-even ones with h + k + l = 4n + 2 ({200},
    /// {222}) cancel as well.
    Diamond,
}

/// A family of lattice planes {hkl} of a cubic crystal and their spacing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reflection {
    /// Miller indices, sorted descending and non-negative: the family's name.
    pub hkl: [u32; 3],
    pub d_angstrom: f64,
}

impl Reflection {
    /// As crystallographers write a family: `{111}`, `{220}`.
    pub fn label(&self) -> String {
        let [h, k, l] = self.hkl;
        format!("{{{h}{k}{l}}}")
    }

    pub fn d_nm(&self) -> f64 {
        self.d_angstrom / 10.0
    }

    /// Whether some member of the family lies in the [110] zone (h = k up to sign): only those
    /// planes are edge-on and give spots when the crystal is seen along [110].
    pub fn in_zone_110(&self) -> bool {
        let [h, k, l] = self.hkl;
        h == k || k == l || h == l
    }
}

/// The allowed reflections {hkl} of a cubic crystal with lattice constant `a` (Å) up to
/// `h² + k² + l² <= max_hkl_squared`, widest spacing first; `d = a / √(h² + k² + l²)`.
pub fn cubic_reflections(
    a: f64,
    structure: CubicStructure,
    max_hkl_squared: u32,
) -> Vec<Reflection> {
    let top = (max_hkl_squared as f64).sqrt() as u32;
    let mut out = Vec::new();
    for h in 0..=top {
        for k in 0..=h {
            for l in 0..=k {
                let n2 = h * h + k * k + l * l;
                if n2 == 0 || n2 > max_hkl_squared {
                    continue;
                }
                let all_odd = h % 2 == 1 && k % 2 == 1 && l % 2 == 1;
                let all_even = h % 2 == 0 && k % 2 == 0 && l % 2 == 0;
                let allowed = all_odd
                    || (all_even
                        && (structure == CubicStructure::ZincBlende || (h + k + l) % 4 == 0));
                if allowed {
                    out.push(Reflection {
                        hkl: [h, k, l],
                        d_angstrom: a / f64::from(n2).sqrt(),
                    });
                }
            }
        }
    }
    out.sort_by(|x, y| y.d_angstrom.total_cmp(&x.d_angstrom));
    out
}

/// The reflection whose spacing is closest to `d_angstrom`, with the relative difference.
pub fn nearest_reflection(
    reflections: &[Reflection],
    d_angstrom: f64,
) -> Option<(Reflection, f64)> {
    reflections
        .iter()
        .map(|r| (*r, (d_angstrom - r.d_angstrom) / r.d_angstrom))
        .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
}

/// A zinc-blende (or diamond, when both species are equal) crystal seen along [110].
pub fn zinc_blende_110(name: &str, a: f64, cation: (&str, f64), anion: (&str, f64)) -> CrystalSpec {
    CrystalSpec {
        name: name.to_string(),
        a_u: a / std::f64::consts::SQRT_2,
        b_v: a,
        species: vec![
            Species {
                symbol: cation.0.into(),
                z: cation.1,
            },
            Species {
                symbol: anion.0.into(),
                z: anion.1,
            },
        ],
        sites: vec![
            Site {
                u: 0.0,
                v: 0.0,
                species: 0,
            },
            Site {
                u: 0.0,
                v: 0.25,
                species: 1,
            },
            Site {
                u: 0.5,
                v: 0.5,
                species: 0,
            },
            Site {
                u: 0.5,
                v: 0.75,
                species: 1,
            },
        ],
        dumbbells: vec![[0, 1], [2, 3]],
        interstitial_sites: vec![[0.0, 0.5], [0.0, 0.75], [0.5, 0.0], [0.5, 0.25]],
        // <112> traces of the two edge-on {111} planes: ½[1-12] projects to (1, 1) cells,
        // i.e. 35.26° from [001], and its mirror image (−1, 1).
        twin_traces: vec![[1.0, 1.0], [-1.0, 1.0]],
    }
}

impl CrystalSpec {
    /// The crystals whose readings of a lattice-derived scale [`Self::preset_scales`] fuses,
    /// in its order, for messages: "CdTe [110], Si [110], GaAs [110]".
    pub fn preset_scale_names(&self) -> String {
        let names: Vec<String> = self.preset_readings().into_iter().map(|r| r.0).collect();
        names.join(", ")
    }

    /// This crystal at scale 1, then each preset of another cell size with its scale.
    fn preset_readings(&self) -> Vec<(String, f64)> {
        let mut out = vec![(self.name.clone(), 1.0)];
        for p in Preset::NAMED {
            let r = p.spec().b_v / self.b_v;
            if r.is_finite() && r > 0.0 && out.iter().all(|o| (o.1 - r).abs() > 0.01) {
                out.push((p.label().to_string(), r));
            }
        }
        out
    }

    /// Relative scales at which a frame whose pixel size was read from its lattice as this crystal
    /// would be read as each preset crystal: 1 first (the crystal assumed), then every preset of
    /// another cell size, as the ratio of cell edges (Si read as CdTe: 6.48/5.43 = 1.19). A
    /// lattice gives the period in pixels, not which crystal it is; a model whose boxes depend on
    /// the scale by more than the presets differ is hedged by fusing its runs at all of them (a
    /// box seen at one scale only keeps a third of its confidence). On the real Si tilt frame
    /// read as CdTe (no `--crystal`), the model drew a false grain boundary at the CdTe reading
    /// (0.51) that neither the Si nor the GaAs reading showed. Where the crystal assumed is right
    /// the hedge costs little: on the realistic synthetic test set, one pass at the scales 1,
    /// 0.838, 0.872 (CdTe's hedge) or 1, 1.193, 1.041 (Si's) scored mAP50 0.912 / mAP50-95 0.805
    /// either way, against 0.914 / 0.807 at the frame's own scale alone (fitted boxes; `eval
    /// --tta --tta-copies frame --tta-scales ...`).
    pub fn preset_scales(&self) -> Vec<f64> {
        self.preset_readings().into_iter().map(|r| r.1).collect()
    }

    /// Checks a (possibly user-edited) structure before it is used.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.a_u.is_finite()
                && self.b_v.is_finite()
                && self.a_u >= 0.5
                && self.b_v >= 0.5
                && self.a_u <= 50.0
                && self.b_v <= 50.0,
            "cell edges must be between 0.5 and 50 Å (got {} x {})",
            self.a_u,
            self.b_v
        );
        anyhow::ensure!(!self.sites.is_empty(), "the basis has no atom columns");
        anyhow::ensure!(self.sites.len() <= 64, "at most 64 basis columns");
        for s in &self.sites {
            anyhow::ensure!(
                s.species < self.species.len(),
                "a basis column refers to a missing species"
            );
            anyhow::ensure!(
                s.u.is_finite() && s.v.is_finite(),
                "basis coordinates must be finite"
            );
        }
        for sp in &self.species {
            anyhow::ensure!(
                sp.z > 0.0 && sp.z < 120.0,
                "atomic number of {} out of range",
                sp.symbol
            );
        }
        for d in &self.dumbbells {
            anyhow::ensure!(
                d[0] < self.sites.len() && d[1] < self.sites.len(),
                "dumbbell refers to a missing site"
            );
        }
        Ok(())
    }

    /// The largest atomic number, used as the intensity reference.
    pub fn z_max(&self) -> f64 {
        self.species.iter().map(|s| s.z).fold(1.0, f64::max)
    }

    /// The shortest distance between two distinct columns of the perfect crystal (Å).
    pub fn min_column_distance(&self) -> f64 {
        let mut best = f64::MAX;
        for (i, a) in self.sites.iter().enumerate() {
            for (j, b) in self.sites.iter().enumerate() {
                for di in -1..=1 {
                    for dj in -1..=1 {
                        if i == j && di == 0 && dj == 0 {
                            continue;
                        }
                        let du = (b.u + di as f64 - a.u) * self.a_u;
                        let dv = (b.v + dj as f64 - a.v) * self.b_v;
                        best = best.min((du * du + dv * dv).sqrt());
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdte_dumbbell_geometry() {
        let c = Preset::Cdte110.spec();
        c.validate().unwrap();
        // Dumbbell spacing a/4 along [001] = 1.62 Å.
        let d = (c.sites[1].v - c.sites[0].v) * c.b_v;
        assert!((d - 1.620).abs() < 0.001, "{d}");
        assert!((c.min_column_distance() - 1.62025).abs() < 1e-4);
        // Cell a/√2 x a.
        assert!((c.a_u - 4.5827).abs() < 1e-3);
        // The twin trace is 35.26° from [001].
        let t = c.twin_traces[0];
        let ang = (t[0] * c.a_u).atan2(t[1] * c.b_v).to_degrees();
        assert!((ang - 35.26).abs() < 0.01, "{ang}");
        // Interstitial channels are at least 1.6 Å from every column.
        for s in &c.interstitial_sites {
            for b in &c.sites {
                for di in -1..=1 {
                    for dj in -1..=1 {
                        let du = (b.u + di as f64 - s[0]) * c.a_u;
                        let dv = (b.v + dj as f64 - s[1]) * c.b_v;
                        assert!((du * du + dv * dv).sqrt() > 1.6);
                    }
                }
            }
        }
    }

    #[test]
    fn reflections_follow_the_cubic_rules_and_the_110_zone() {
        let cdte: Vec<String> = Preset::Cdte110
            .zone_110_reflections()
            .iter()
            .map(Reflection::label)
            .collect();
        assert_eq!(
            cdte,
            [
                "{111}", "{200}", "{220}", "{311}", "{222}", "{400}", "{331}"
            ]
        );
        let r = Preset::Cdte110.zone_110_reflections();
        assert!((r[0].d_angstrom - 6.481 / 3f64.sqrt()).abs() < 1e-9);
        assert!((r[0].d_nm() - 0.37418).abs() < 1e-4);
        // {400}: the dumbbell spacing a/4
        assert!((r[5].d_angstrom - 1.62025).abs() < 1e-4);
        // silicon's {200} and {222} cancel; {420} is allowed but not in the [110] zone
        let si: Vec<String> = Preset::Si110
            .zone_110_reflections()
            .iter()
            .map(Reflection::label)
            .collect();
        assert_eq!(si, ["{111}", "{220}", "{311}", "{400}", "{331}"]);
        let all = cubic_reflections(6.481, CubicStructure::ZincBlende, 20);
        assert!(all.iter().any(|r| r.hkl == [4, 2, 0] && !r.in_zone_110()));
        // in diamond {420} cancels too (h + k + l = 6)
        let si_all = cubic_reflections(5.431, CubicStructure::Diamond, 20);
        assert!(!si_all.iter().any(|r| r.hkl == [4, 2, 0]));
        assert!(Preset::Custom.zone_110_reflections().is_empty());
        let (n, err) = nearest_reflection(&r, 3.3).unwrap();
        assert_eq!(n.hkl, [2, 0, 0]);
        assert!((err - (3.3 - 3.2405) / 3.2405).abs() < 1e-3);
    }

    #[test]
    fn cd_and_te_differ_si_does_not() {
        let c = Preset::Cdte110.spec();
        assert_ne!(c.species[0].z, c.species[1].z);
        let s = Preset::Si110.spec();
        assert_eq!(s.species[0].z, s.species[1].z);
        assert!((s.a_u - 5.431 / 2f64.sqrt()).abs() < 1e-9);
    }
}
