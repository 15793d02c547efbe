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
                zinc_blende_110("CdTe [110]", 6.481, ("Cd", 48.0), ("Te", 52.0))
            }
            Preset::Si110 => zinc_blende_110("Si [110]", 5.431, ("Si", 14.0), ("Si", 14.0)),
            Preset::Gaas110 => zinc_blende_110("GaAs [110]", 5.653, ("Ga", 31.0), ("As", 33.0)),
        }
    }
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
    fn cd_and_te_differ_si_does_not() {
        let c = Preset::Cdte110.spec();
        assert_ne!(c.species[0].z, c.species[1].z);
        let s = Preset::Si110.spec();
        assert_eq!(s.species[0].z, s.species[1].z);
        assert!((s.a_u - 5.431 / 2f64.sqrt()).abs() < 1e-9);
    }
}
