//! Loading a YOLO-OBB ONNX export and running it: metadata, shape checks, execution provider.

use super::runtime;
use crate::classes::MAX_CLASSES;
use anyhow::Context;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when the runtime has it and it starts, otherwise CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!("unknown device '{other}' (auto, cpu or cuda)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DetectorOptions {
    pub device: Device,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per physical core).
    pub threads: usize,
    /// ONNX Runtime library to load (first load in the process only); `None` = discovery.
    pub runtime_library: Option<PathBuf>,
    /// Let idle ONNX Runtime workers spin between operators instead of sleeping: about 8 %
    /// faster inference on CPU (`bench detect --spinning on|off`); off leaves the cores to
    /// other work sooner.
    pub spinning: bool,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            device: Device::default(),
            threads: 0,
            runtime_library: None,
            spinning: true,
        }
    }
}

/// The smallest and largest pixel size (nm) of a model's training frames.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TrainedPixelSizes {
    pub lo: f64,
    pub hi: f64,
}

impl TrainedPixelSizes {
    /// Parses the metadata value `lo,hi` (nm).
    pub fn parse(s: &str) -> Option<Self> {
        let (lo, hi) = s.split_once(',')?;
        let (lo, hi) = (
            lo.trim().parse::<f64>().ok()?,
            hi.trim().parse::<f64>().ok()?,
        );
        (lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo).then_some(Self { lo, hi })
    }

    pub fn contains(&self, nm_per_px: f64) -> bool {
        (self.lo..=self.hi).contains(&nm_per_px)
    }
}

/// What the model says about itself (ONNX metadata and tensor shapes).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// Class names by id.
    pub names: Vec<String>,
    /// Square input size in pixels (the training size when the input is dynamic).
    pub imgsz: usize,
    /// The export takes any input height and width (multiples of the largest stride): whole
    /// frames then run in one pass instead of tiles (see [`super::pre::plan_one_pass`]).
    pub dynamic_input: bool,
    /// Anchor strides, finest first.
    pub strides: Vec<usize>,
    /// Anchors per image (the last output dimension).
    pub num_anchors: usize,
    /// The pixel size the model was trained at (custom metadata key `nm_per_px`).
    pub nm_per_px: Option<f64>,
    /// The span of pixel sizes its training frames were drawn from, in nm (metadata key
    /// `nm_per_px_range`, `lo,hi`): frames sampled inside it are also run as sampled
    /// ([`super::own_sampling_scale`]).
    pub trained_nm_per_px: Option<TrainedPixelSizes>,
    pub task: Option<String>,
    pub input_name: String,
    pub output_name: String,
}

impl ModelInfo {
    pub fn num_classes(&self) -> usize {
        self.names.len()
    }
    /// Rows of the output: 4 box values, one score per class, the angle.
    pub fn output_rows(&self) -> usize {
        4 + self.names.len() + 1
    }
    /// The coarsest anchor stride: a dynamic input's sides must be multiples of it.
    pub fn max_stride(&self) -> usize {
        self.strides.iter().copied().max().unwrap_or(32)
    }
}

struct Inner {
    session: Session,
    /// The input tensor buffer, reused between runs.
    input: Vec<f32>,
}

/// A loaded oriented-box detector. `Send + Sync`: runs are serialised internally, so one
/// detector can be shared between the GUI and background jobs.
pub struct Detector {
    info: ModelInfo,
    provider: String,
    runtime: runtime::RuntimeInfo,
    inner: Mutex<Inner>,
}

/// Execution provider names as ONNX Runtime spells them.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";
pub const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

fn build_session(path: &Path, threads: usize, spinning: bool, cuda: bool) -> ort::Result<Session> {
    let env = runtime::environment().map_err(|e| ort::Error::new(e.to_string()))?;
    let mut b = Session::builder(env)?
        .with_log_level(ort::logging::LogLevel::Warning)?
        .with_intra_op_spinning(spinning)?
        .with_inter_op_spinning(spinning)?;
    if threads > 0 {
        b = b.with_intra_threads(threads)?;
    }
    if cuda {
        b = b.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?;
    }
    b.commit_from_file(path)
}

fn cuda_compiled_in() -> bool {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::is_available().unwrap_or(false)
}

impl Detector {
    /// Loads and validates a model. Refuses anything that is not a YOLO-OBB export with the
    /// `[1, 4+nc+1, N]` raw output (see [`check_output_shape`]).
    pub fn load(path: &Path, opts: &DetectorOptions) -> anyhow::Result<Self> {
        if !path.exists() {
            anyhow::bail!("model file not found: {}", path.display());
        }
        if !path.is_file() {
            anyhow::bail!("model path is not a file: {}", path.display());
        }
        let runtime = runtime::init_runtime(opts.runtime_library.as_deref())?;
        let (session, provider) = match opts.device {
            Device::Cpu => (Self::session(path, opts, false)?, CPU_PROVIDER),
            Device::Cuda => {
                if !cuda_compiled_in() {
                    anyhow::bail!(
                        "CUDA was requested but the ONNX Runtime at {} has no CUDA execution \
                         provider (install onnxruntime-gpu=={} and its CUDA libraries, or use \
                         --device cpu)",
                        runtime.library.display(),
                        runtime::ORT_WHEEL_VERSION
                    );
                }
                (
                    Self::session(path, opts, true)
                        .context("CUDA was requested but could not start")?,
                    CUDA_PROVIDER,
                )
            }
            Device::Auto => {
                let cuda = if cuda_compiled_in() {
                    match Self::session(path, opts, true) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!("CUDA unavailable, running on CPU: {e:#}");
                            None
                        }
                    }
                } else {
                    None
                };
                match cuda {
                    Some(s) => (s, CUDA_PROVIDER),
                    None => (Self::session(path, opts, false)?, CPU_PROVIDER),
                }
            }
        };
        let info = inspect(path, &session)?;
        let n = 3 * info.imgsz * info.imgsz;
        Ok(Self {
            info,
            provider: provider.to_string(),
            runtime,
            inner: Mutex::new(Inner {
                session,
                input: vec![0.0; n],
            }),
        })
    }

    fn session(path: &Path, opts: &DetectorOptions, cuda: bool) -> anyhow::Result<Session> {
        build_session(path, opts.threads, opts.spinning, cuda)
            .map_err(|e| anyhow::anyhow!("cannot load {} as an ONNX model: {e}", path.display()))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn class_names(&self) -> &[String] {
        &self.info.names
    }

    /// The execution provider that runs the model (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn runtime(&self) -> &runtime::RuntimeInfo {
        &self.runtime
    }

    /// Fills an `in_w x in_h` input buffer with `fill`, runs the model and hands the raw output
    /// (`[4+nc+1, N]`, row-major) to `read`. Returns `read`'s result and the time spent in
    /// `session.run` alone. The input is the model's square size, or for a model with a dynamic
    /// input any multiple of its largest stride.
    pub(crate) fn run_sized<R>(
        &self,
        in_w: usize,
        in_h: usize,
        fill: impl FnOnce(&mut [f32]),
        read: impl FnOnce(&[f32]) -> R,
    ) -> anyhow::Result<(R, Duration)> {
        let s = self.info.imgsz;
        if (in_w, in_h) != (s, s) {
            let stride = self.info.max_stride();
            if !self.info.dynamic_input
                || in_w == 0
                || in_h == 0
                || !in_w.is_multiple_of(stride)
                || !in_h.is_multiple_of(stride)
            {
                anyhow::bail!(
                    "an input of {in_w}x{in_h} does not fit this model ({s}x{s}{})",
                    if self.info.dynamic_input {
                        format!(", or any multiple of {stride}")
                    } else {
                        String::new()
                    }
                );
            }
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        // Grows once to the largest frame seen and stays (no allocation per frame after that).
        let n = 3 * in_w * in_h;
        if inner.input.len() < n {
            inner.input.resize(n, 0.0);
        }
        let input = &mut inner.input[..n];
        fill(input);
        let tensor = TensorRef::from_array_view(([1usize, 3, in_h, in_w], &*input))
            .map_err(|e| anyhow::anyhow!("cannot wrap the input tensor: {e}"))?;
        let t0 = Instant::now();
        let outputs = inner
            .session
            .run(ort::inputs![self.info.input_name.as_str() => tensor])
            .map_err(|e| anyhow::anyhow!("inference failed: {e}"))?;
        let run_time = t0.elapsed();
        let value = outputs
            .get(self.info.output_name.as_str())
            .ok_or_else(|| anyhow::anyhow!("the model produced no '{}'", self.info.output_name))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow::anyhow!("output is not a float tensor: {e}"))?;
        let rows = self.info.output_rows();
        let dims: Vec<i64> = shape.to_vec();
        if dims.len() != 3 || dims[0] != 1 || dims[1] as usize != rows {
            anyhow::bail!("model output has shape {dims:?}, expected [1, {rows}, N]");
        }
        if data.len() != rows * dims[2] as usize {
            anyhow::bail!(
                "model output holds {} values for shape {dims:?}",
                data.len()
            );
        }
        Ok((read(data), run_time))
    }
}

/// Reads metadata and checks the input and output shapes.
fn inspect(path: &Path, session: &Session) -> anyhow::Result<ModelInfo> {
    let file = path.display();
    let meta = session
        .metadata()
        .map_err(|e| anyhow::anyhow!("{file}: cannot read model metadata: {e}"))?;
    let names_meta = meta.custom("names");
    let imgsz_meta = meta.custom("imgsz");
    let task = meta.custom("task");
    let nm_per_px = match meta.custom("nm_per_px") {
        Some(s) => Some(
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    anyhow::anyhow!("{file}: metadata nm_per_px '{s}' is not a positive number")
                })?,
        ),
        None => None,
    };
    let trained_nm_per_px = match meta.custom("nm_per_px_range") {
        Some(s) => Some(TrainedPixelSizes::parse(&s).ok_or_else(|| {
            anyhow::anyhow!(
                "{file}: metadata nm_per_px_range '{s}' is not two increasing positive sizes 'lo,hi'"
            )
        })?),
        None => None,
    };
    drop(meta);
    if let Some(t) = &task
        && t != "obb"
    {
        anyhow::bail!(
            "{file}: this is a '{t}' model; the detector needs an oriented-box ('obb') model"
        );
    }
    if session.inputs().len() != 1 {
        anyhow::bail!(
            "{file}: the model has {} inputs; a YOLO export has one ('images')",
            session.inputs().len()
        );
    }
    if session.outputs().is_empty() {
        anyhow::bail!("{file}: the model has no outputs");
    }
    let input = &session.inputs()[0];
    let output = &session.outputs()[0];
    let in_shape: Vec<i64> = input
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .ok_or_else(|| anyhow::anyhow!("{file}: input '{}' is not a tensor", input.name()))?;
    let out_shape: Vec<i64> = output
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .ok_or_else(|| anyhow::anyhow!("{file}: output '{}' is not a tensor", output.name()))?;
    // Every run feeds f32 (see `run_sized`); a uint8 or f16 input would load and then fail on
    // every image.
    for (what, v) in [("input", input), ("output", output)] {
        let ty = v.dtype().tensor_type();
        if ty != Some(ort::value::TensorElementType::Float32) {
            anyhow::bail!(
                "{file}: {what} '{}' is {}, not float32; export the model with float32 {what}s \
                 (Ultralytics: half=False, int8=False)",
                v.name(),
                ty.map_or("not a tensor".to_string(), |t| format!("{t:?}"))
            );
        }
    }
    let imgsz_meta = match imgsz_meta {
        Some(s) => Some(parse_imgsz(&s).map_err(|e| anyhow::anyhow!("{file}: {e}"))?),
        None => None,
    };
    let imgsz =
        check_input_shape(&in_shape, imgsz_meta).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let dynamic_input = in_shape.len() == 4 && in_shape[2] <= 0 && in_shape[3] <= 0;
    let names = match names_meta {
        Some(s) => parse_names(&s).map_err(|e| anyhow::anyhow!("{file}: metadata names: {e}"))?,
        None => {
            // Without names, infer the class count from the output and number the classes.
            let rows = out_shape.get(1).copied().unwrap_or(-1);
            if rows < 6 || rows as u64 > (MAX_CLASSES + 5) as u64 {
                anyhow::bail!(
                    "{file}: no class names in the metadata and output shape {out_shape:?} does not tell the class count"
                );
            }
            (0..rows as usize - 5)
                .map(|i| format!("class_{i}"))
                .collect()
        }
    };
    let (strides, num_anchors) = check_output_shape(&out_shape, names.len(), imgsz)
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok(ModelInfo {
        path: path.to_path_buf(),
        names,
        imgsz,
        dynamic_input,
        strides,
        num_anchors,
        nm_per_px,
        trained_nm_per_px,
        task,
        input_name: input.name().to_string(),
        output_name: output.name().to_string(),
    })
}

/// Largest model input side. The input buffer (`3 * S * S` floats) is allocated from the
/// model's shape or metadata, so a damaged file must not choose it freely; YOLO models are
/// trained at 640 to 1280.
pub const MAX_IMGSZ: usize = 4096;

/// The square input size from an `[1, 3, S, S]` input (dynamic sizes take the metadata's).
pub fn check_input_shape(shape: &[i64], imgsz_meta: Option<[usize; 2]>) -> Result<usize, String> {
    if shape.len() != 4 || (shape[0] != 1 && shape[0] != -1) || shape[1] != 3 {
        return Err(format!(
            "input shape {shape:?} is not [1, 3, S, S] (an RGB image batch of one)"
        ));
    }
    let dim = |d: i64, m: Option<usize>| -> Result<usize, String> {
        if d > 0 {
            if let Some(m) = m
                && m != d as usize
            {
                return Err(format!(
                    "input size {d} disagrees with the metadata imgsz {m}"
                ));
            }
            Ok(d as usize)
        } else {
            m.ok_or_else(|| "dynamic input size and no imgsz in the metadata".to_string())
        }
    };
    let h = dim(shape[2], imgsz_meta.map(|m| m[0]))?;
    let w = dim(shape[3], imgsz_meta.map(|m| m[1]))?;
    if h != w {
        return Err(format!(
            "input {w}x{h} is not square; export with a square imgsz"
        ));
    }
    if h < 32 || h % 32 != 0 {
        return Err(format!("input size {h} is not a positive multiple of 32"));
    }
    if h > MAX_IMGSZ {
        return Err(format!(
            "input size {h} is larger than {MAX_IMGSZ}, the largest this program runs"
        ));
    }
    Ok(h)
}

/// Validates the raw YOLO-OBB output `[1, 4+nc+1, N]` and returns the anchor strides and `N`.
pub fn check_output_shape(
    shape: &[i64],
    nc: usize,
    imgsz: usize,
) -> Result<(Vec<usize>, usize), String> {
    let rows = 4 + nc + 1;
    if shape.len() == 3 && shape[0] == 1 && shape[2] >= 5 && shape[2] <= 8 && shape[1] > shape[2] {
        return Err(format!(
            "output shape {shape:?} is an end-to-end (NMS-free, e.g. YOLO26 or nms=True) export; \
             export a YOLO-OBB model with the raw head output [1, {rows}, N] instead"
        ));
    }
    // A dynamic export names its batch dimension (-1 here); it runs with a batch of one.
    if shape.len() != 3 || (shape[0] != 1 && shape[0] > 0) {
        return Err(format!("output shape {shape:?} is not [1, {rows}, N]"));
    }
    if shape[1] == (4 + nc) as i64 {
        return Err(format!(
            "output shape {shape:?} has no angle row: this is an axis-aligned detection model, \
             not an oriented-box (OBB) one"
        ));
    }
    if shape[1] != rows as i64 {
        return Err(format!(
            "output shape {shape:?} does not fit {nc} classes: expected [1, {rows}, N] \
             (4 box values, {nc} scores, 1 angle)"
        ));
    }
    let layouts: [&[usize]; 3] = [&[8, 16, 32], &[4, 8, 16, 32], &[8, 16, 32, 64]];
    let anchors = |strides: &[usize]| -> usize {
        strides
            .iter()
            .map(|s| imgsz.div_ceil(*s) * imgsz.div_ceil(*s))
            .sum()
    };
    if shape[2] <= 0 {
        // Dynamic anchor count: the standard P3-P5 head is assumed and checked at run time.
        let s = layouts[0].to_vec();
        let n = anchors(&s);
        return Ok((s, n));
    }
    for l in layouts {
        if anchors(l) == shape[2] as usize {
            return Ok((l.to_vec(), shape[2] as usize));
        }
    }
    Err(format!(
        "output has {} anchors, which matches no YOLO head at imgsz {imgsz} (P3-P5 would give {})",
        shape[2],
        anchors(layouts[0])
    ))
}

/// Parses Ultralytics' `names` metadata: a Python dict literal such as
/// `{0: 'grain_boundary', 1: 'vacancy'}` (or a list literal `['a', 'b']`).
pub fn parse_names(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    let (body, dict) = if let Some(b) = t.strip_prefix('{').and_then(|b| b.strip_suffix('}')) {
        (b, true)
    } else if let Some(b) = t.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        (b, false)
    } else {
        return Err(format!("'{s}' is neither a dict nor a list"));
    };
    let items = split_top_level(body);
    let mut out: Vec<Option<String>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (idx, val) = if dict {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("entry '{item}' has no ':'"))?;
            let k: usize = k
                .trim()
                .trim_matches(['\'', '"'])
                .parse()
                .map_err(|_| format!("key '{}' is not a class index", k.trim()))?;
            (k, v.trim())
        } else {
            (i, item)
        };
        let name = unquote(val).ok_or_else(|| format!("value '{val}' is not a quoted string"))?;
        if idx >= MAX_CLASSES {
            return Err(format!(
                "class index {idx} is beyond the {MAX_CLASSES} classes a model may have"
            ));
        }
        if out.len() <= idx {
            out.resize(idx + 1, None);
        }
        out[idx] = Some(name);
    }
    if out.is_empty() {
        return Err("no classes".into());
    }
    out.into_iter()
        .enumerate()
        .map(|(i, n)| n.ok_or_else(|| format!("class {i} has no name")))
        .collect()
}

/// Splits on commas outside quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in s.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            continue;
        }
        match (quote, ch) {
            (Some(_), '\\') => {
                cur.push(ch);
                escaped = true;
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, '\'' | '"') => {
                quote = Some(ch);
                cur.push(ch);
            }
            (None, ',') => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    let q = v.chars().next()?;
    if (q == '\'' || q == '"') && v.len() >= 2 && v.ends_with(q) {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    } else {
        None
    }
}

/// Parses `imgsz` metadata: `[768, 768]` (height, width) or a single number.
pub fn parse_imgsz(s: &str) -> Result<[usize; 2], String> {
    let body = s
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let nums: Result<Vec<usize>, _> = body
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse::<usize>)
        .collect();
    match nums.as_deref() {
        Ok([n]) => Ok([*n, *n]),
        Ok([h, w]) => Ok([*h, *w]),
        _ => Err(format!("imgsz '{s}' is not [h, w]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_pixel_sizes_from_metadata() {
        let t = TrainedPixelSizes::parse(" 0.006, 0.03").unwrap();
        assert_eq!(
            t,
            TrainedPixelSizes {
                lo: 0.006,
                hi: 0.03
            }
        );
        assert!(t.contains(0.006) && t.contains(0.024) && t.contains(0.03));
        assert!(!t.contains(0.0059) && !t.contains(0.031));
        for bad in [
            "0.03,0.006",
            "0.01,0.01",
            "0.01",
            "-0.01,0.03",
            "a,b",
            "0.01,inf",
            "",
        ] {
            assert_eq!(TrainedPixelSizes::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_from_python_dict_and_list() {
        let n = parse_names("{0: 'grain_boundary', 1: 'vacancy', 2: 'interstitial'}").unwrap();
        assert_eq!(n, vec!["grain_boundary", "vacancy", "interstitial"]);
        let n = parse_names(r#"{1: "b, with comma", 0: 'it\'s'}"#).unwrap();
        assert_eq!(n, vec!["it's", "b, with comma"]);
        assert_eq!(parse_names("['a', 'b']").unwrap(), vec!["a", "b"]);
        assert!(
            parse_names("{0: 'a', 2: 'c'}")
                .unwrap_err()
                .contains("class 1")
        );
        assert!(parse_names("grain").is_err());
        assert!(parse_names("{x: 'a'}").is_err());
    }

    #[test]
    fn class_ids_and_input_sizes_from_files_are_bounded() {
        // Used to resize a vector to 10^15 entries and abort.
        let e = parse_names("{999999999999999: 'a'}").unwrap_err();
        assert!(e.contains("999999999999999") && e.contains("beyond"), "{e}");
        assert!(
            parse_names(&format!("{{{}: 'a'}}", MAX_CLASSES - 1))
                .is_err_and(|e| e.contains("class 0 has no name"))
        );
        let e = check_input_shape(&[1, 3, -1, -1], Some([1 << 30, 1 << 30])).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = check_input_shape(&[1, 3, 1 << 20, 1 << 20], None).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert_eq!(
            check_input_shape(&[1, 3, -1, -1], Some([MAX_IMGSZ; 2])),
            Ok(MAX_IMGSZ)
        );
    }

    #[test]
    fn imgsz_forms() {
        assert_eq!(parse_imgsz("[768, 768]").unwrap(), [768, 768]);
        assert_eq!(parse_imgsz("640").unwrap(), [640, 640]);
        assert!(parse_imgsz("[a]").is_err());
    }

    #[test]
    fn output_shapes_accepted_and_refused() {
        assert_eq!(
            check_output_shape(&[1, 8, 12096], 3, 768).unwrap(),
            (vec![8, 16, 32], 12096)
        );
        assert_eq!(check_output_shape(&[1, 8, 8400], 3, 640).unwrap().1, 8400);
        let e = check_output_shape(&[1, 300, 7], 3, 640).unwrap_err();
        assert!(e.contains("end-to-end"), "{e}");
        let e = check_output_shape(&[1, 7, 8400], 3, 640).unwrap_err();
        assert!(e.contains("no angle"), "{e}");
        let e = check_output_shape(&[1, 9, 8400], 3, 640).unwrap_err();
        assert!(e.contains("does not fit 3 classes"), "{e}");
        let e = check_output_shape(&[1, 8, 8000], 3, 640).unwrap_err();
        assert!(e.contains("anchors"), "{e}");
    }

    #[test]
    fn input_shapes() {
        assert_eq!(
            check_input_shape(&[1, 3, 768, 768], Some([768, 768])).unwrap(),
            768
        );
        assert_eq!(
            check_input_shape(&[1, 3, -1, -1], Some([640, 640])).unwrap(),
            640
        );
        assert!(check_input_shape(&[1, 1, 64, 64], None).is_err());
        assert!(check_input_shape(&[1, 3, 64, 96], None).is_err());
        assert!(check_input_shape(&[1, 3, 64, 64], Some([32, 32])).is_err());
        assert!(check_input_shape(&[1, 3, -1, -1], None).is_err());
    }
}
