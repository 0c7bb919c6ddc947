//! LightGBM's text model read natively: the trees of a binary model, with
//! node decisions taken exactly as LightGBM takes them (`tree.h`
//! `NumericalDecision` / `CategoricalDecision`, after the C API's dense-row
//! copy turns values within `kZeroThreshold` of zero into zero). Used for
//! reason codes ([`crate::treeshap`]); the score itself still comes from
//! LightGBM.
//!
//! Anything this reader does not understand (linear trees, several trees per
//! iteration, averaged outputs, malformed lists) is refused when the model
//! is loaded rather than explained wrongly.

use std::fmt;

/// LightGBM's `kZeroThreshold`: `1e-35f` widened to a double.
const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

/// Decision type bits (`tree.h`): categorical split, missing values go left,
/// and the missing type in bits 2-3.
const CATEGORICAL: u8 = 1;
const DEFAULT_LEFT: u8 = 2;
const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;

/// Why a model text cannot be read as a forest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TreeTextError {
    /// The tree concerned (`Tree=N`), if any.
    pub tree: Option<usize>,
    pub message: String,
}

impl fmt::Display for TreeTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tree {
            Some(t) => write!(f, "Tree={t}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn header_error(message: impl Into<String>) -> TreeTextError {
    TreeTextError { tree: None, message: message.into() }
}

/// One regression tree. Internal nodes are numbered from 0 (the root);
/// children below zero are leaves, `!child` being the leaf index.
#[derive(Clone, Debug)]
pub struct Tree {
    pub split_feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub decision_type: Vec<u8>,
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    /// Training rows through each internal node and leaf (the cover TreeSHAP uses).
    pub internal_count: Vec<f64>,
    pub leaf_count: Vec<f64>,
    pub leaf_value: Vec<f64>,
    pub cat_boundaries: Vec<u32>,
    pub cat_threshold: Vec<u32>,
}

impl Tree {
    pub fn num_leaves(&self) -> usize {
        self.leaf_value.len()
    }

    pub fn num_internal(&self) -> usize {
        self.split_feature.len()
    }

    /// The count of a child reference (internal node or `!leaf`).
    #[inline]
    pub fn count(&self, child: i32) -> f64 {
        if child >= 0 {
            self.internal_count[child as usize]
        } else {
            self.leaf_count[!child as usize]
        }
    }

    /// Whether a row with `value` for the node's feature goes to the left child.
    #[inline]
    pub fn goes_left(&self, node: usize, value: f64) -> bool {
        // The C API's dense rows keep only values farther than this from zero.
        let v = if value.abs() <= ZERO_THRESHOLD { 0.0 } else { value };
        let dt = self.decision_type[node];
        if dt & CATEGORICAL != 0 {
            // NaN and negative codes go right; `as` truncates like C++'s
            // cast (values past i32 saturate instead, and are past any bitset).
            if v.is_nan() || (v as i32) < 0 {
                return false;
            }
            let code = v as i32 as u32;
            let cat = self.threshold[node] as usize;
            let (lo, hi) = (self.cat_boundaries[cat] as usize, self.cat_boundaries[cat + 1] as usize);
            let word = (code / 32) as usize;
            return word < hi - lo && (self.cat_threshold[lo + word] >> (code % 32)) & 1 != 0;
        }
        let missing = (dt >> 2) & 3;
        let v = if v.is_nan() && missing != MISSING_NAN { 0.0 } else { v };
        if (missing == MISSING_ZERO && v == 0.0) || (missing == MISSING_NAN && v.is_nan()) {
            return dt & DEFAULT_LEFT != 0;
        }
        v <= self.threshold[node]
    }

    /// The leaf a row lands in.
    pub fn leaf(&self, row: &[f64]) -> usize {
        if self.num_internal() == 0 {
            return 0;
        }
        let mut node = 0i32;
        while node >= 0 {
            let n = node as usize;
            node = if self.goes_left(n, row[self.split_feature[n] as usize]) { self.left[n] } else { self.right[n] };
        }
        !node as usize
    }

    /// The mean output over the training rows (LightGBM's `ExpectedValue`).
    pub fn expected_value(&self) -> f64 {
        if self.num_internal() == 0 {
            return self.leaf_value[0];
        }
        let total = self.internal_count[0];
        self.leaf_value.iter().zip(&self.leaf_count).map(|(v, c)| c / total * v).sum()
    }
}

/// The trees of a binary LightGBM model, in order.
#[derive(Clone, Debug)]
pub struct Forest {
    /// Number of model inputs (`max_feature_idx + 1`).
    pub width: usize,
    pub trees: Vec<Tree>,
}

impl Forest {
    /// Reads a LightGBM text model.
    pub fn parse(text: &str) -> Result<Forest, TreeTextError> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).peekable();
        let mut width = None;
        while let Some(line) = lines.next_if(|l| !l.starts_with("Tree=")) {
            if line == "end of trees" {
                break;
            }
            if line == "average_output" {
                return Err(header_error("average_output (random forest) models are not supported"));
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            match key {
                "max_feature_idx" => {
                    let v: usize = value.trim().parse().map_err(|_| header_error("max_feature_idx is not a number"))?;
                    width = Some(v + 1);
                }
                "num_class" | "num_tree_per_iteration" if value.trim() != "1" => {
                    return Err(header_error(format!(
                        "{key}={value}: only models with one tree per iteration (binary) are supported"
                    )));
                }
                _ => {}
            }
        }
        let width = width.ok_or_else(|| header_error("no max_feature_idx in the model header"))?;
        let mut trees = Vec::new();
        while let Some(line) = lines.next() {
            if line == "end of trees" {
                break;
            }
            let Some(index) = line.strip_prefix("Tree=") else { continue };
            let at = trees.len();
            let err = |message: String| TreeTextError { tree: Some(at), message };
            if index.trim().parse::<usize>().ok() != Some(at) {
                return Err(err(format!("found `{line}` where Tree={at} was expected")));
            }
            let mut block = Block::default();
            while let Some(l) = lines.next_if(|l| !l.is_empty() && !l.starts_with("Tree=") && *l != "end of trees") {
                if let Some((k, v)) = l.split_once('=') {
                    block.0.push((k, v));
                }
            }
            trees.push(block.tree(width).map_err(err)?);
        }
        if trees.is_empty() {
            return Err(header_error("the model has no trees"));
        }
        Ok(Forest { width, trees })
    }

    /// The raw score (log-odds) for a row: the sum of the trees' leaf values, in tree order.
    pub fn raw_score(&self, row: &[f64]) -> f64 {
        self.trees.iter().map(|t| t.leaf_value[t.leaf(row)]).sum()
    }
}

/// The `key=value` lines of one `Tree=` block.
#[derive(Default)]
struct Block<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Block<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn list<T: std::str::FromStr>(&self, key: &str, len: usize) -> Result<Vec<T>, String> {
        let text = self.get(key).ok_or_else(|| format!("no `{key}`"))?;
        let items: Vec<T> = text
            .split_whitespace()
            .map(|s| s.parse().map_err(|_| format!("`{key}` has `{s}`, which is not a valid number")))
            .collect::<Result<_, _>>()?;
        if items.len() != len {
            return Err(format!("`{key}` has {} values where {len} were expected", items.len()));
        }
        Ok(items)
    }

    fn tree(&self, width: usize) -> Result<Tree, String> {
        let num_leaves: usize = self
            .get("num_leaves")
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n| n >= 1)
            .ok_or("no valid `num_leaves`")?;
        if self.get("is_linear").is_some_and(|v| v.trim() != "0") {
            return Err("linear trees (is_linear=1) are not supported".into());
        }
        let leaf_value: Vec<f64> = self.list("leaf_value", num_leaves)?;
        if num_leaves == 1 {
            return Ok(Tree {
                split_feature: Vec::new(),
                threshold: Vec::new(),
                decision_type: Vec::new(),
                left: Vec::new(),
                right: Vec::new(),
                internal_count: Vec::new(),
                leaf_count: vec![0.0],
                leaf_value,
                cat_boundaries: Vec::new(),
                cat_threshold: Vec::new(),
            });
        }
        let n = num_leaves - 1;
        let split_feature: Vec<u32> = self.list("split_feature", n)?;
        let threshold: Vec<f64> = self.list("threshold", n)?;
        let decision_type: Vec<u8> = self.list("decision_type", n)?;
        let left: Vec<i32> = self.list("left_child", n)?;
        let right: Vec<i32> = self.list("right_child", n)?;
        let counts = |key: &str, len: usize| -> Result<Vec<f64>, String> {
            let c: Vec<u32> = self.list(key, len)?;
            if c.contains(&0) {
                return Err(format!("`{key}` has a count of 0; reason codes need the training row counts"));
            }
            Ok(c.into_iter().map(f64::from).collect())
        };
        let internal_count = counts("internal_count", n)?;
        let leaf_count = counts("leaf_count", num_leaves)?;
        let num_cat: usize = self.get("num_cat").and_then(|v| v.trim().parse().ok()).ok_or("no valid `num_cat`")?;
        let (cat_boundaries, cat_threshold) = if num_cat > 0 {
            let b: Vec<u32> = self.list("cat_boundaries", num_cat + 1)?;
            if b[0] != 0 || b.windows(2).any(|w| w[0] > w[1]) {
                return Err("`cat_boundaries` is not an increasing list from 0".into());
            }
            let t: Vec<u32> = self.list("cat_threshold", b[num_cat] as usize)?;
            (b, t)
        } else {
            (Vec::new(), Vec::new())
        };
        for node in 0..n {
            if split_feature[node] as usize >= width {
                return Err(format!("node {node} splits on input {}, past the model's {width}", split_feature[node]));
            }
            if decision_type[node] & CATEGORICAL != 0 {
                let t = threshold[node];
                if !(t >= 0.0 && (t as usize) < num_cat && t.fract() == 0.0) {
                    return Err(format!("node {node} names category set {t}, but the tree has {num_cat}"));
                }
            } else if (decision_type[node] >> 2) & 3 == 3 {
                return Err(format!("node {node} has an unknown missing-value type"));
            }
        }
        // Walk from the root: every node and leaf must be reached exactly once.
        let mut seen_node = vec![false; n];
        let mut seen_leaf = vec![false; num_leaves];
        let mut stack = vec![0i32];
        while let Some(c) = stack.pop() {
            let slot = if c >= 0 { seen_node.get_mut(c as usize) } else { seen_leaf.get_mut(!c as usize) };
            match slot {
                Some(s) if !*s => *s = true,
                _ => return Err(format!("child {c} is out of range or reached twice: the lists do not make a tree")),
            }
            if c >= 0 {
                stack.extend([left[c as usize], right[c as usize]]);
            }
        }
        if seen_node.contains(&false) || seen_leaf.contains(&false) {
            return Err("some nodes or leaves are not reached from the root".into());
        }
        Ok(Tree {
            split_feature,
            threshold,
            decision_type,
            left,
            right,
            internal_count,
            leaf_count,
            leaf_value,
            cat_boundaries,
            cat_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nmax_feature_idx=1\n\n";
    const TREE: &str = "Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
threshold=1 2
decision_type=2 0
left_child=1 -2
right_child=-1 -3
leaf_value=0.1 0.2 0.3
leaf_count=4 5 6
internal_count=15 11
is_linear=0
shrinkage=1

";

    fn error(text: &str) -> String {
        Forest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_trees_and_takes_lightgbm_decisions() {
        let forest = Forest::parse(&format!("{HEADER}{TREE}end of trees\n")).unwrap();
        assert_eq!((forest.width, forest.trees.len()), (2, 1));
        let t = &forest.trees[0];
        // NaN with missing type None is taken as 0; 0 <= 1 goes left.
        assert_eq!(t.leaf(&[f64::NAN, 0.0]), 1);
        assert_eq!(t.leaf(&[1.0, 2.0]), 1);
        assert_eq!(t.leaf(&[1.0, 2.5]), 2);
        assert_eq!(t.leaf(&[1.5, 0.0]), 0);
        assert!((t.expected_value() - (4.0 * 0.1 + 5.0 * 0.2 + 6.0 * 0.3) / 15.0).abs() < 1e-15);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let model = |tree: &str| format!("{HEADER}{tree}end of trees\n");
        let cases = [
            (HEADER.replace("num_class=1", "num_class=3"), "num_class=3: only models with one tree per iteration"),
            (format!("{HEADER}average_output\n{TREE}"), "average_output (random forest)"),
            (model(TREE).replace("max_feature_idx=1\n", ""), "no max_feature_idx"),
            (HEADER.to_string(), "the model has no trees"),
            (model(TREE).replace("Tree=0", "Tree=1"), "found `Tree=1` where Tree=0 was expected"),
            (model(TREE).replace("is_linear=0", "is_linear=1"), "Tree=0: linear trees (is_linear=1) are not supported"),
            (model(TREE).replace("leaf_value=0.1 0.2 0.3", "leaf_value=0.1 0.2"), "`leaf_value` has 2 values where 3"),
            (model(TREE).replace("threshold=1 2", "threshold=1 x"), "`threshold` has `x`, which is not a valid number"),
            (
                model(TREE).replace("split_feature=0 1", "split_feature=0 2"),
                "node 1 splits on input 2, past the model's 2",
            ),
            (model(TREE).replace("left_child=1 -2", "left_child=1 1"), "the lists do not make a tree"),
            (model(TREE).replace("right_child=-1 -3", "right_child=-1 -2"), "the lists do not make a tree"),
            (model(TREE).replace("left_child=1 -2", "left_child=1 -4"), "the lists do not make a tree"),
            (model(TREE).replace("internal_count=15 11", "internal_count=15 0"), "`internal_count` has a count of 0"),
            (
                model(TREE).replace("decision_type=2 0", "decision_type=2 1"),
                "node 1 names category set 2, but the tree has 0",
            ),
            (
                model(TREE).replace("num_cat=0", "num_cat=1\ncat_boundaries=0 2\ncat_threshold=1"),
                "`cat_threshold` has 1 values where 2",
            ),
        ];
        for (text, want) in cases {
            let got = error(&text);
            assert!(got.contains(want), "{got}\n  should say: {want}");
        }
    }
}
