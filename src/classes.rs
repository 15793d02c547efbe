//! Defect classes, in the published order (YOLO class ids).

use serde::{Deserialize, Serialize};

/// Most classes a model or dataset file may declare. Class ids read from a file size vectors
/// (names by id), so an id like 10^12 must be refused before it allocates; far above any
/// defect taxonomy.
pub const MAX_CLASSES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectClass {
    GrainBoundary = 0,
    Vacancy = 1,
    Interstitial = 2,
}

impl DefectClass {
    pub const ALL: [DefectClass; 3] = [
        DefectClass::GrainBoundary,
        DefectClass::Vacancy,
        DefectClass::Interstitial,
    ];

    pub fn id(self) -> usize {
        self as usize
    }

    pub fn from_id(id: usize) -> Option<Self> {
        Self::ALL.get(id).copied()
    }

    /// Outline colour in the PNG overlays the command line writes (`lattice --maps-png`,
    /// `eval-real --save-variants`): boundaries red, vacancies blue, interstitials green.
    pub fn overlay_rgb(self) -> [u8; 3] {
        match self {
            DefectClass::GrainBoundary => [255, 40, 40],
            DefectClass::Vacancy => [60, 160, 255],
            DefectClass::Interstitial => [60, 255, 60],
        }
    }

    /// The name written into `data.yaml` and model metadata.
    pub fn name(self) -> &'static str {
        match self {
            DefectClass::GrainBoundary => "grain_boundary",
            DefectClass::Vacancy => "vacancy",
            DefectClass::Interstitial => "interstitial",
        }
    }

    /// Display colour (sRGB), chosen to stay distinct on gray images and for common colour
    /// blindness (Okabe–Ito palette).
    pub fn color(self) -> [u8; 3] {
        class_color(self.id())
    }
}

/// Okabe–Ito colours by class id; classes beyond the palette cycle.
pub fn class_color(id: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 7] = [
        [230, 159, 0],   // orange: grain boundary
        [86, 180, 233],  // sky blue: vacancy
        [0, 158, 115],   // bluish green: interstitial
        [240, 228, 66],  // yellow
        [0, 114, 178],   // blue
        [213, 94, 0],    // vermillion
        [204, 121, 167], // reddish purple
    ];
    PALETTE[id % PALETTE.len()]
}

/// The class names of our own datasets, by id.
pub fn default_class_names() -> Vec<String> {
    DefectClass::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}
