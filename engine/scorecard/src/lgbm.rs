//! A thin, safe layer over LightGBM's C API (`lightgbm3-sys`) for what the
//! `lightgbm3` wrapper does not offer or does not do the way serving needs:
//!
//! - training from a dense matrix *with* dataset parameters (`max_bin`,
//!   `feature_pre_filter`, `min_data_in_bin`, `categorical_feature`), which
//!   `lightgbm3::Dataset::from_slice` never passes to LightGBM;
//! - input names of any length (`lightgbm3` reads them into 64-byte buffers);
//! - single-row prediction into buffers the caller owns, so scoring an event
//!   allocates nothing on our side; LightGBM's own SHAP contributions on the
//!   same path, kept as the reference the native TreeSHAP is tested against.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use lightgbm3_sys as sys;

/// An error reported by LightGBM (its last-error text) or by this layer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LgbmError(pub String);

fn check(rc: c_int) -> Result<(), LgbmError> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: LightGBM returns a pointer to a thread-local, NUL-terminated
    // message that stays valid until the next failing call on this thread.
    let msg = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) };
    Err(LgbmError(msg.to_string_lossy().into_owned()))
}

fn cstring(text: &str, what: &str) -> Result<CString, LgbmError> {
    CString::new(text).map_err(|_| LgbmError(format!("{what} contains a NUL byte")))
}

/// LightGBM parameters as the C API wants them: `key=value` pairs separated
/// by spaces. Strings are passed bare, arrays as comma-separated lists.
pub fn param_string(params: &serde_json::Map<String, serde_json::Value>) -> String {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    params.iter().map(|(k, v)| format!("{k}={}", value(v))).collect::<Vec<_>>().join(" ")
}

/// A loaded LightGBM model (a booster handle).
pub struct Model {
    handle: sys::BoosterHandle,
}

// SAFETY: a booster handle is not tied to the thread that created it; the C
// API may be used from any thread. Mutating calls (fast-path setup) take
// `&mut self`; read-only predictions are internally synchronised by LightGBM.
unsafe impl Send for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the handle came from LightGBM and is freed exactly once.
        unsafe { sys::LGBM_BoosterFree(self.handle) };
    }
}

impl Model {
    /// Parses a LightGBM text model.
    pub fn from_string(text: &str) -> Result<Model, LgbmError> {
        let c = cstring(text, "the model text")?;
        let mut iterations = 0;
        let mut handle = ptr::null_mut();
        // SAFETY: valid C string and out-pointers.
        check(unsafe { sys::LGBM_BoosterLoadModelFromString(c.as_ptr(), &mut iterations, &mut handle) })?;
        Ok(Model { handle })
    }

    pub fn num_features(&self) -> Result<usize, LgbmError> {
        let mut n = 0;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::LGBM_BoosterGetNumFeature(self.handle, &mut n) })?;
        Ok(n as usize)
    }

    pub fn num_classes(&self) -> Result<usize, LgbmError> {
        let mut n = 0;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::LGBM_BoosterGetNumClasses(self.handle, &mut n) })?;
        Ok(n as usize)
    }

    /// The model's input names, whatever their length: LightGBM reports the
    /// buffer size it needs, and a short first attempt is retried with it.
    pub fn feature_names(&self) -> Result<Vec<String>, LgbmError> {
        let n = self.num_features()?;
        let mut size = 64usize;
        loop {
            let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
            let mut ptrs: Vec<*mut c_char> = bufs.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
            let (mut got, mut needed) = (0, 0usize);
            // SAFETY: `n` buffers of `size` bytes each; LightGBM writes at most
            // `size` bytes into each and reports the size it would need.
            check(unsafe {
                sys::LGBM_BoosterGetFeatureNames(
                    self.handle,
                    n as c_int,
                    &mut got,
                    size,
                    &mut needed,
                    ptrs.as_mut_ptr(),
                )
            })?;
            if needed > size {
                size = needed;
                continue;
            }
            return bufs
                .iter()
                .take(got as usize)
                .map(|b| {
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    String::from_utf8(b[..end].to_vec()).map_err(|_| LgbmError("an input name is not UTF-8".into()))
                })
                .collect();
        }
    }

    /// The model as LightGBM's text format.
    pub fn save_string(&self) -> Result<String, LgbmError> {
        let mut len = 0i64;
        // SAFETY: a zero-length buffer only asks for the needed length.
        check(unsafe { sys::LGBM_BoosterSaveModelToString(self.handle, 0, -1, 0, 0, &mut len, ptr::null_mut()) })?;
        let mut buf = vec![0u8; len as usize];
        let mut written = 0i64;
        // SAFETY: `buf` holds `len` bytes.
        check(unsafe {
            sys::LGBM_BoosterSaveModelToString(self.handle, 0, -1, 0, len, &mut written, buf.as_mut_ptr().cast())
        })?;
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        buf.truncate(end);
        String::from_utf8(buf).map_err(|_| LgbmError("the model text is not UTF-8".into()))
    }

    /// Probabilities for many rows (row-major, `width` inputs each).
    pub fn predict_batch(&self, rows: &[f64], width: usize) -> Result<Vec<f64>, LgbmError> {
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(LgbmError(format!("{} values do not make rows of {width} inputs", rows.len())));
        }
        let n = rows.len() / width;
        let mut out = vec![0.0; n * self.num_classes()?];
        if n == 0 {
            return Ok(out);
        }
        let params = cstring("num_threads=1", "parameters")?;
        let mut len = 0i64;
        // SAFETY: `rows` holds n*width f64s; `out` has room for n*classes results.
        check(unsafe {
            sys::LGBM_BoosterPredictForMat(
                self.handle,
                rows.as_ptr().cast(),
                sys::C_API_DTYPE_FLOAT64 as c_int,
                n as i32,
                width as i32,
                1,
                sys::C_API_PREDICT_NORMAL as c_int,
                0,
                -1,
                params.as_ptr(),
                &mut len,
                out.as_mut_ptr(),
            )
        })?;
        Ok(out)
    }
}

/// Trains a model on a dense row-major matrix and returns its text. `params` are used both to
/// construct the dataset (binning, pre-filter, categorical columns) and to
/// train, as LightGBM's own Python package does.
pub fn train(
    rows: &[f64],
    labels: &[f32],
    names: &[String],
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, LgbmError> {
    let width = names.len();
    if width == 0 || rows.len() != labels.len() * width {
        return Err(LgbmError(format!("{} values do not make {} rows of {width} inputs", rows.len(), labels.len())));
    }
    let iterations = params.get("num_iterations").and_then(|v| v.as_u64()).unwrap_or(100);
    let text = cstring(&param_string(params), "the parameters")?;
    let dataset = Dataset::from_mat(rows, labels.len(), width, &text)?;
    let label = cstring("label", "field")?;
    // SAFETY: `labels` holds one f32 per row.
    check(unsafe {
        sys::LGBM_DatasetSetField(
            dataset.0,
            label.as_ptr(),
            labels.as_ptr().cast::<c_void>(),
            labels.len() as c_int,
            sys::C_API_DTYPE_FLOAT32 as c_int,
        )
    })?;
    let cnames = names.iter().map(|n| cstring(n, "an input name")).collect::<Result<Vec<_>, _>>()?;
    let mut ptrs: Vec<*const c_char> = cnames.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: one valid C string per column.
    check(unsafe { sys::LGBM_DatasetSetFeatureNames(dataset.0, ptrs.as_mut_ptr(), width as c_int) })?;
    let mut handle = ptr::null_mut();
    // SAFETY: valid dataset and parameters; the booster is freed by `Model`.
    check(unsafe { sys::LGBM_BoosterCreate(dataset.0, text.as_ptr(), &mut handle) })?;
    let model = Model { handle };
    for _ in 0..iterations {
        let mut finished = 0;
        // SAFETY: valid booster handle.
        check(unsafe { sys::LGBM_BoosterUpdateOneIter(model.handle, &mut finished) })?;
        if finished != 0 {
            break;
        }
    }
    // The trained booster refers to its dataset; the text is all that is
    // kept, and what is served is loaded from it.
    let text = model.save_string()?;
    drop(model);
    drop(dataset);
    Ok(text)
}

struct Dataset(sys::DatasetHandle);

impl Dataset {
    fn from_mat(rows: &[f64], n: usize, width: usize, params: &CStr) -> Result<Dataset, LgbmError> {
        let mut handle = ptr::null_mut();
        // SAFETY: `rows` holds n*width f64s in row-major order.
        check(unsafe {
            sys::LGBM_DatasetCreateFromMat(
                rows.as_ptr().cast(),
                sys::C_API_DTYPE_FLOAT64 as c_int,
                n as i32,
                width as i32,
                1,
                params.as_ptr(),
                ptr::null_mut(),
                &mut handle,
            )
        })?;
        Ok(Dataset(handle))
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: freed exactly once.
        unsafe { sys::LGBM_DatasetFree(self.0) };
    }
}

/// One prepared single-row fast path (LightGBM's `FastConfig`).
struct FastConfig {
    handle: sys::FastConfigHandle,
    out_len: usize,
}

impl Drop for FastConfig {
    fn drop(&mut self) {
        // SAFETY: freed exactly once.
        unsafe { sys::LGBM_FastConfigFree(self.handle) };
    }
}

impl FastConfig {
    fn new(model: &Model, predict_type: u32, width: usize, out_len: usize) -> Result<FastConfig, LgbmError> {
        let params = cstring("num_threads=1", "parameters")?;
        let mut handle = ptr::null_mut();
        // SAFETY: valid booster handle, parameters and out-pointer.
        check(unsafe {
            sys::LGBM_BoosterPredictForMatSingleRowFastInit(
                model.handle,
                predict_type as c_int,
                0,
                -1,
                sys::C_API_DTYPE_FLOAT64 as c_int,
                width as i32,
                params.as_ptr(),
                &mut handle,
            )
        })?;
        Ok(FastConfig { handle, out_len })
    }

    #[inline]
    fn run(&mut self, row: &[f64], out: &mut [f64]) -> Result<(), LgbmError> {
        let mut len = 0i64;
        // SAFETY: the caller checked that `row` has the width and `out` the
        // length fixed when this config was made.
        check(unsafe {
            sys::LGBM_BoosterPredictForMatSingleRowFast(self.handle, row.as_ptr().cast(), &mut len, out.as_mut_ptr())
        })
    }
}

/// A model prepared for scoring one row at a time through LightGBM's fast
/// path: the number of columns and the parameters are fixed at setup, so a
/// prediction is one call into LightGBM writing into a caller-owned buffer.
/// Owns its model; the prepared configs refer to it and are dropped first.
pub struct SingleRow {
    normal: FastConfig,
    /// Prepared on first use: serving takes contributions from
    /// [`crate::treeshap`], not from here.
    contrib: Option<FastConfig>,
    contrib_len: usize,
    width: usize,
    model: Model,
}

// SAFETY: a booster handle and its fast configs are not tied to a thread;
// they are used only through `&mut self`, one call at a time.
unsafe impl Send for SingleRow {}

impl SingleRow {
    pub fn new(model: Model, width: usize) -> Result<SingleRow, LgbmError> {
        let classes = model.num_classes()?;
        let normal = FastConfig::new(&model, sys::C_API_PREDICT_NORMAL, width, classes)?;
        Ok(SingleRow { normal, contrib: None, contrib_len: classes * (width + 1), width, model })
    }

    /// How many values [`contrib`](Self::contrib) writes: one per input, then the bias.
    pub fn contrib_len(&self) -> usize {
        self.contrib_len
    }

    fn check(&self, row: &[f64], out: &[f64], want: usize) -> Result<(), LgbmError> {
        if row.len() != self.width || out.len() < want {
            return Err(LgbmError(format!(
                "a row of {} values for a model of {} inputs, or an output buffer of {} for {want} results",
                row.len(),
                self.width,
                out.len()
            )));
        }
        Ok(())
    }

    /// The model's prediction for one row (the probability, for a binary model).
    #[inline]
    pub fn predict(&mut self, row: &[f64]) -> Result<f64, LgbmError> {
        if self.normal.out_len != 1 {
            return Err(LgbmError(format!("the model predicts {} values per row, not one", self.normal.out_len)));
        }
        let mut out = [0.0f64; 1];
        self.check(row, &out, 1)?;
        self.normal.run(row, &mut out)?;
        Ok(out[0])
    }

    /// LightGBM's SHAP contributions for one row into `out`: one per input,
    /// then the bias. The first call prepares the fast path (and allocates).
    pub fn contrib(&mut self, row: &[f64], out: &mut [f64]) -> Result<(), LgbmError> {
        self.check(row, out, self.contrib_len)?;
        let contrib = match &mut self.contrib {
            Some(c) => c,
            None => self.contrib.insert(FastConfig::new(
                &self.model,
                sys::C_API_PREDICT_CONTRIB,
                self.width,
                self.contrib_len,
            )?),
        };
        contrib.run(row, out)
    }
}
