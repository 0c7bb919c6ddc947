//! Exact path-dependent TreeSHAP (Lundberg et al. 2018), as LightGBM's
//! `predict_contrib` computes it, without allocating per row.
//!
//! For one leaf, let P be the distinct features split on along its path
//! (k of them), z_j the product of the cover fractions (training row counts,
//! child over parent) of the path's splits on j, and o_j 1 when the row
//! follows every split on j along the path, else 0. The leaf adds to φ_j
//!
//! ```text
//!   v · (o_j − z_j) · Σ_{S ⊆ P∖{j}, o_m = 1 ∀ m ∈ S}  |S|! (k−|S|−1)! / k! · Π_{m ∈ P∖{j}∖S} z_m
//! ```
//!
//! Let H be the features the row follows (o = 1) and C the others. A term
//! with m ∈ C among the unknowns S is zero, so the sum is over S ⊆ H∖{j},
//! and every cold feature outside S contributes its z:
//!
//! ```text
//!   j ∈ C:  −v · Π_{m ∈ C} z_m · g(H)
//!   j ∈ H:   v · (1 − z_j) · Π_{m ∈ C} z_m · g(H∖{j})
//!   g(Q) = Σ_{S ⊆ Q} |S|! (k−|S|−1)! / k! · Π_{m ∈ Q∖S} z_m
//! ```
//!
//! g depends only on which of the leaf's k features are in Q, so it is
//! tabulated at load, one value per subset (2^k per leaf). A row then costs
//! one decision per internal node and, per leaf, k mask tests, a product
//! over its cold features, k + 1 table reads and k additions.
//!
//! A small tree's contributions depend on the row only through its n node
//! decisions; for n up to 10 (the shipped A card has 7) the whole tree is
//! tabulated per combination of decisions, from the leaf tables, and a row
//! costs n decisions and one addition per distinct feature of the tree.
//! Trees whose leaf tables would be large use the classic recursive
//! algorithm (the paper's Algorithm 2, the one LightGBM runs) with a path
//! buffer the caller owns.
//!
//! The bias is the sum of the trees' expected values (leaf values weighted
//! by their training row counts), so contributions and bias add up to the
//! raw score (log-odds) of the row.

use crate::trees::{Forest, Tree};

/// Per-tree table size (values) above which the recursive algorithm is used.
pub const DEFAULT_TABLE_LIMIT: usize = 1 << 15;

/// Table values over a whole model (32 MiB): trees past it use the
/// recursive algorithm, so a model of many large trees stays within memory.
pub const MODEL_TABLE_BUDGET: usize = 1 << 22;

/// Paths with more distinct features than this are never tabulated.
const MAX_TABLE_FEATURES: usize = 13;

/// Per-tree size (values) of a table over node decisions above which the
/// leaf tables are used instead.
pub const DEFAULT_DECISION_LIMIT: usize = 1 << 12;

/// Trees with more internal nodes than this are never tabulated by decisions.
const MAX_DECISION_NODES: usize = 10;

/// A forest prepared for SHAP contributions. Shared between workers; each
/// keeps its own [`Scratch`].
#[derive(Clone)]
pub struct Explainer {
    width: usize,
    bias: f64,
    trees: Vec<Plan>,
    /// Path buffer length the recursive trees need.
    path_len: usize,
}

#[derive(Clone, Debug)]
enum Plan {
    /// A single leaf: only the bias.
    Constant,
    Decisions(DecisionTable),
    Table(TableTree),
    Recursive(Tree),
}

/// A small tree's contributions for each combination of its node decisions
/// (bit n set: the row goes left at node n): 2^n rows of one value per
/// distinct feature the tree splits on.
#[derive(Clone, Debug)]
struct DecisionTable {
    tree: Tree,
    features: Vec<u32>,
    table: Vec<f64>,
}

#[derive(Clone, Debug)]
struct TableTree {
    tree: Tree,
    leaves: Vec<LeafPlan>,
    features: Vec<PathFeature>,
    table: Vec<f64>,
}

#[derive(Clone, Copy, Debug)]
struct LeafPlan {
    /// The leaf's distinct path features: `features[first..first + k]`.
    first: u32,
    k: u32,
    /// Start of the leaf's g: `2^k` values, indexed by subset bit mask.
    table: u32,
    value: f64,
}

#[derive(Clone, Copy, Debug)]
struct PathFeature {
    feature: u32,
    /// The path's internal nodes that split on this feature (bit = node index)…
    nodes: u64,
    /// …and, among them, those where the path goes left.
    left: u64,
    /// The product of the cover fractions of those splits.
    z: f64,
    /// v · (1 − z), v the leaf value: the factor when the row follows.
    hot_value: f64,
}

/// Per-worker buffer for the recursive trees.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    path: Vec<PathElement>,
}

#[derive(Clone, Copy, Debug, Default)]
struct PathElement {
    feature: i32,
    zero: f64,
    one: f64,
    pweight: f64,
}

impl Explainer {
    pub fn new(forest: &Forest) -> Explainer {
        Explainer::with_limits(forest, DEFAULT_TABLE_LIMIT, DEFAULT_DECISION_LIMIT)
    }

    /// With per-tree limits on the size of leaf tables (0: every tree
    /// recursive) and of tables over node decisions (0: none).
    pub fn with_limits(forest: &Forest, limit: usize, decision_limit: usize) -> Explainer {
        let mut bias = 0.0;
        let mut path_len = 0;
        let mut trees = Vec::with_capacity(forest.trees.len());
        let mut budget = MODEL_TABLE_BUDGET;
        for tree in &forest.trees {
            // Summed tree by tree, in order, as LightGBM does.
            bias += tree.expected_value();
            if tree.num_internal() == 0 {
                trees.push(Plan::Constant);
                continue;
            }
            let paths = leaf_paths(tree);
            match TableTree::build(tree, &paths, limit.min(budget)) {
                Some(t) => match DecisionTable::build(&t, forest.width, decision_limit.min(budget)) {
                    Some(d) => {
                        budget -= d.table.len();
                        trees.push(Plan::Decisions(d));
                    }
                    None => {
                        budget -= t.table.len();
                        trees.push(Plan::Table(t));
                    }
                },
                None => {
                    let depth = paths.iter().map(Vec::len).max().unwrap_or(0);
                    path_len = path_len.max((depth + 2) * (depth + 3) / 2);
                    trees.push(Plan::Recursive(tree.clone()));
                }
            }
        }
        Explainer { width: forest.width, bias, trees, path_len }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Values written by [`contributions`](Self::contributions): one per input, then the bias.
    pub fn len(&self) -> usize {
        self.width + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The expected raw score over the training rows.
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// How many trees use each method: tables over node decisions, leaf
    /// tables, the recursive algorithm.
    pub fn methods(&self) -> (usize, usize, usize) {
        let count = |f: fn(&Plan) -> bool| self.trees.iter().filter(|p| f(p)).count();
        (
            count(|p| matches!(p, Plan::Decisions(_))),
            count(|p| matches!(p, Plan::Table(_))),
            count(|p| matches!(p, Plan::Recursive(_))),
        )
    }

    /// Values held in tables, over all trees.
    pub fn table_values(&self) -> usize {
        let size = |p: &Plan| match p {
            Plan::Decisions(d) => d.table.len(),
            Plan::Table(t) => t.table.len(),
            _ => 0,
        };
        self.trees.iter().map(size).sum()
    }

    pub fn scratch(&self) -> Scratch {
        Scratch { path: vec![PathElement::default(); self.path_len] }
    }

    /// SHAP contributions of `row` (exactly [`width`](Self::width) values)
    /// into `out` (at least [`len`](Self::len)): one per input, then the bias.
    pub fn contributions(&self, row: &[f64], scratch: &mut Scratch, out: &mut [f64]) {
        assert!(row.len() == self.width && out.len() > self.width, "row or output of the wrong size");
        let out = &mut out[..=self.width];
        out.fill(0.0);
        out[self.width] = self.bias;
        if scratch.path.len() < self.path_len {
            // Only when the scratch came from another explainer.
            scratch.path.resize(self.path_len, PathElement::default());
        }
        for plan in &self.trees {
            match plan {
                Plan::Constant => {}
                Plan::Decisions(d) => d.add(row, out),
                Plan::Table(t) => t.add(row, out),
                Plan::Recursive(tree) => {
                    let root = PathElement { feature: -1, zero: 1.0, one: 1.0, pweight: 0.0 };
                    recurse(tree, row, out, &mut scratch.path, 0, 0, 0, root);
                }
            }
        }
    }
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (decisions, tables, recursive) = self.methods();
        f.debug_struct("Explainer")
            .field("width", &self.width)
            .field("trees", &self.trees.len())
            .field("decision_table_trees", &decisions)
            .field("leaf_table_trees", &tables)
            .field("recursive_trees", &recursive)
            .field("table_values", &self.table_values())
            .finish()
    }
}

/// For each leaf, its path from the root: (internal node, goes left).
fn leaf_paths(tree: &Tree) -> Vec<Vec<(usize, bool)>> {
    let mut paths = vec![Vec::new(); tree.num_leaves()];
    let mut stack = vec![(0i32, Vec::new())];
    while let Some((node, path)) = stack.pop() {
        if node < 0 {
            paths[!node as usize] = path;
            continue;
        }
        let n = node as usize;
        let mut l = path.clone();
        l.push((n, true));
        let mut r = path;
        r.push((n, false));
        stack.push((tree.left[n], l));
        stack.push((tree.right[n], r));
    }
    paths
}

impl TableTree {
    fn build(tree: &Tree, paths: &[Vec<(usize, bool)>], limit: usize) -> Option<TableTree> {
        if tree.num_internal() > 64 {
            return None;
        }
        let mut leaves = Vec::with_capacity(paths.len());
        let mut features: Vec<PathFeature> = Vec::new();
        let mut size = 0usize;
        for (path, &value) in paths.iter().zip(&tree.leaf_value) {
            let first = features.len();
            for &(node, left) in path {
                let f = tree.split_feature[node];
                let child = if left { tree.left[node] } else { tree.right[node] };
                let fraction = tree.count(child) / tree.internal_count[node];
                let i = match features[first..].iter().position(|p| p.feature == f) {
                    Some(i) => i,
                    None => {
                        features.push(PathFeature { feature: f, nodes: 0, left: 0, z: 1.0, hot_value: 0.0 });
                        features.len() - first - 1
                    }
                };
                let p = &mut features[first + i];
                p.nodes |= 1 << node;
                if left {
                    p.left |= 1 << node;
                }
                p.z *= fraction;
            }
            for p in &mut features[first..] {
                p.hot_value = value * (1.0 - p.z);
            }
            let k = features.len() - first;
            if k > MAX_TABLE_FEATURES {
                return None;
            }
            leaves.push(LeafPlan { first: first as u32, k: k as u32, table: size as u32, value });
            size += 1 << k;
            if size > limit {
                return None;
            }
        }
        let mut table = vec![0.0; size];
        let mut z = Vec::new();
        for leaf in &leaves {
            z.clear();
            z.extend(features[leaf.first as usize..][..leaf.k as usize].iter().map(|p| p.z));
            fill_subset_table(&z, &mut table[leaf.table as usize..][..1 << leaf.k]);
        }
        Some(TableTree { tree: tree.clone(), leaves, features, table })
    }

    #[inline]
    fn add(&self, row: &[f64], out: &mut [f64]) {
        self.add_leaves(decisions(&self.tree, row), out);
    }

    /// The leaves' contributions for a row whose node decisions are `went_left`.
    #[inline]
    fn add_leaves(&self, went_left: u64, out: &mut [f64]) {
        for leaf in &self.leaves {
            let features = &self.features[leaf.first as usize..][..leaf.k as usize];
            let g = &self.table[leaf.table as usize..][..1 << leaf.k];
            let (mut hot, mut cold_z) = (0usize, 1.0);
            for (i, f) in features.iter().enumerate() {
                let follows = (went_left ^ f.left) & f.nodes == 0;
                hot |= usize::from(follows) << i;
                cold_z *= [f.z, 1.0][usize::from(follows)];
            }
            let cold = -leaf.value * cold_z * g[hot];
            for (i, f) in features.iter().enumerate() {
                // g(H∖{j}) for a feature the row follows; for one it does not,
                // the index is H ∪ {j}, a valid entry whose value is not used.
                let follows = hot >> i & 1;
                let when_hot = f.hot_value * cold_z * g[hot ^ 1 << i];
                out[f.feature as usize] += [cold, when_hot][follows];
            }
        }
    }
}

/// Which way a row goes at each internal node (bit n set: left), written
/// without branches on the row: to the branch predictor it is as good as
/// random.
#[inline]
fn decisions(tree: &Tree, row: &[f64]) -> u64 {
    let mut went_left = 0u64;
    for n in 0..tree.num_internal() {
        went_left |= u64::from(tree.goes_left(n, row[tree.split_feature[n] as usize])) << n;
    }
    went_left
}

impl DecisionTable {
    fn build(leaves: &TableTree, width: usize, limit: usize) -> Option<DecisionTable> {
        let tree = &leaves.tree;
        let n = tree.num_internal();
        let mut features = tree.split_feature.clone();
        features.sort_unstable();
        features.dedup();
        if n > MAX_DECISION_NODES || (features.len() << n) > limit {
            return None;
        }
        let mut table = Vec::with_capacity(features.len() << n);
        let mut out = vec![0.0; width];
        for went_left in 0..1u64 << n {
            out.fill(0.0);
            leaves.add_leaves(went_left, &mut out);
            table.extend(features.iter().map(|&f| out[f as usize]));
        }
        Some(DecisionTable { tree: tree.clone(), features, table })
    }

    #[inline]
    fn add(&self, row: &[f64], out: &mut [f64]) {
        let u = self.features.len();
        let values = &self.table[decisions(&self.tree, row) as usize * u..][..u];
        for (&f, v) in self.features.iter().zip(values) {
            out[f as usize] += v;
        }
    }
}

/// g(Q) for every subset Q (bit mask) of a leaf's k path features with
/// cover products `z`: Σ_{S ⊆ Q} |S|!(k−|S|−1)!/k! · Π_{m ∈ Q∖S} z_m.
fn fill_subset_table(z: &[f64], table: &mut [f64]) {
    let k = z.len();
    if k == 0 {
        return;
    }
    // Shapley weight of a coalition of s of the other k-1 features.
    let weight: Vec<f64> = (0..k).map(|s| 1.0 / (k as f64 * binomial(k - 1, s))).collect();
    // poly[s]: Σ over S ⊆ Q with |S| = s of the product of z over Q∖S.
    let mut poly = vec![0.0; k + 1];
    for (q, g) in table.iter_mut().enumerate() {
        poly.fill(0.0);
        poly[0] = 1.0;
        let mut degree = 0;
        for zm in z.iter().enumerate().filter(|&(m, _)| q >> m & 1 == 1).map(|(_, &zm)| zm) {
            degree += 1;
            for s in (1..=degree).rev() {
                poly[s] = poly[s] * zm + poly[s - 1];
            }
            poly[0] *= zm;
        }
        // The full set is never a coalition of the others; its g is unused.
        *g = poly[..=degree.min(k - 1)].iter().zip(&weight).map(|(c, w)| c * w).sum();
    }
}

fn binomial(n: usize, r: usize) -> f64 {
    (0..r).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// LightGBM's `Tree::TreeSHAP`: the unique path of `node` is kept at
/// `path[offset + depth..]`, after its parent's, so both subtrees start from
/// the same parent path without copying it back.
#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    row: &[f64],
    phi: &mut [f64],
    path: &mut [PathElement],
    parent_offset: usize,
    node: i32,
    mut depth: usize,
    incoming: PathElement,
) {
    let offset = parent_offset + depth;
    path.copy_within(parent_offset..offset, offset);
    let unique = &mut path[offset..];
    extend(unique, depth, incoming.zero, incoming.one, incoming.feature);
    if node < 0 {
        let value = tree.leaf_value[!node as usize];
        for i in 1..=depth {
            let w = unwound_sum(unique, depth, i);
            let el = unique[i];
            phi[el.feature as usize] += w * (el.one - el.zero) * value;
        }
        return;
    }
    let n = node as usize;
    let feature = tree.split_feature[n] as i32;
    let (hot, cold) = if tree.goes_left(n, row[feature as usize]) {
        (tree.left[n], tree.right[n])
    } else {
        (tree.right[n], tree.left[n])
    };
    let w = tree.internal_count[n];
    let (hot_zero, cold_zero) = (tree.count(hot) / w, tree.count(cold) / w);
    let (mut in_zero, mut in_one) = (1.0, 1.0);
    if let Some(i) = (0..=depth).find(|&i| unique[i].feature == feature) {
        in_zero = unique[i].zero;
        in_one = unique[i].one;
        unwind(unique, depth, i);
        depth -= 1;
    }
    let child = |zero, one| PathElement { feature, zero, one, pweight: 0.0 };
    recurse(tree, row, phi, path, offset, hot, depth + 1, child(hot_zero * in_zero, in_one));
    recurse(tree, row, phi, path, offset, cold, depth + 1, child(cold_zero * in_zero, 0.0));
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i32) {
    path[depth] = PathElement { feature, zero, one, pweight: if depth == 0 { 1.0 } else { 0.0 } };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f64 / d1;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f64 / d1;
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let PathElement { one, zero, .. } = path[index];
    let d1 = (depth + 1) as f64;
    let mut next_one = path[depth].pweight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].pweight;
            path[i].pweight = next_one * d1 / ((i + 1) as f64 * one);
            next_one = tmp - path[i].pweight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].pweight = (path[i].pweight * d1) / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let PathElement { one, zero, .. } = path[index];
    let d1 = (depth + 1) as f64;
    let mut next_one = path[depth].pweight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next_one * d1 / ((i + 1) as f64 * one);
            total += tmp;
            next_one = path[i].pweight - tmp * zero * ((depth - i) as f64 / d1);
        } else {
            total += (path[i].pweight / zero) / ((depth - i) as f64 / d1);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four inputs; tree 0 splits twice on input 0 along one path, once on a
    /// category set (codes 1, 3 and 40: two bitset words), once with NaN
    /// going left and once with zero as missing; tree 1 is a constant.
    const MODEL: &str = "tree
version=v4
num_class=1
num_tree_per_iteration=1
max_feature_idx=3
objective=binary sigmoid:1

Tree=0
num_leaves=5
num_cat=1
split_feature=0 1 2 0
threshold=5 0 1.5 2
decision_type=0 1 10 4
left_child=1 -1 -2 -4
right_child=2 3 -3 -5
leaf_value=-0.4 0.3 0.9 -1.1 0.05
leaf_count=25 15 25 20 15
internal_count=100 60 40 35
cat_boundaries=0 2
cat_threshold=10 256
is_linear=0
shrinkage=1


Tree=1
num_leaves=1
num_cat=0
split_feature=
threshold=
decision_type=
left_child=
right_child=
leaf_value=0.25
is_linear=0
shrinkage=1


Tree=2
num_leaves=3
num_cat=0
split_feature=3 1
threshold=0 7.5
decision_type=2 0
left_child=-1 -2
right_child=1 -3
leaf_value=0.2 -0.3 0.6
leaf_count=30 50 20
internal_count=100 70
is_linear=0
shrinkage=1


end of trees
";

    /// E[tree | the inputs in `known` are the row's], the others following
    /// the training rows (the cover) at each split.
    fn conditional(tree: &Tree, node: i32, row: &[f64], known: u32) -> f64 {
        if tree.num_internal() == 0 {
            return tree.leaf_value[0];
        }
        if node < 0 {
            return tree.leaf_value[!node as usize];
        }
        let n = node as usize;
        let f = tree.split_feature[n] as usize;
        let (l, r) = (tree.left[n], tree.right[n]);
        if known >> f & 1 == 1 {
            conditional(tree, if tree.goes_left(n, row[f]) { l } else { r }, row, known)
        } else {
            (tree.count(l) * conditional(tree, l, row, known) + tree.count(r) * conditional(tree, r, row, known))
                / tree.internal_count[n]
        }
    }

    /// Shapley values by their definition, over every coalition.
    fn shapley(forest: &Forest, row: &[f64]) -> Vec<f64> {
        let m = forest.width;
        let value = |known: u32| -> f64 { forest.trees.iter().map(|t| conditional(t, 0, row, known)).sum() };
        let fact = |n: usize| (1..=n).map(|i| i as f64).product::<f64>();
        let mut phi = vec![0.0; m + 1];
        for (j, p) in phi.iter_mut().enumerate().take(m) {
            for s in 0..1u32 << m {
                if s >> j & 1 == 1 {
                    continue;
                }
                let size = s.count_ones() as usize;
                *p += fact(size) * fact(m - size - 1) / fact(m) * (value(s | 1 << j) - value(s));
            }
        }
        phi[m] = value(0);
        phi
    }

    #[test]
    fn every_method_equals_shapley_values_by_definition() {
        let forest = Forest::parse(MODEL).unwrap();
        let decisions = Explainer::new(&forest);
        let tables = Explainer::with_limits(&forest, DEFAULT_TABLE_LIMIT, 0);
        let recursive = Explainer::with_limits(&forest, 0, 0);
        assert_eq!(decisions.methods(), (2, 0, 0));
        assert_eq!(tables.methods(), (0, 2, 0));
        assert_eq!(recursive.methods(), (0, 0, 2));
        let choices: [&[f64]; 4] = [
            &[f64::NAN, 0.0, 1e-36, 1.0, 2.0, 2.5, 5.0, 6.0, -3.0, f64::INFINITY],
            &[f64::NAN, -1.0, -0.5, 0.0, 1.0, 2.0, 3.0, 3.9, 7.5, 40.0, 41.0, 1e10],
            &[f64::NAN, 0.0, 1.5, 1.6, -2.0],
            &[f64::NAN, 0.0, -1e-36, 1.0, -1.0],
        ];
        let (mut a, mut b, mut c) = (vec![0.0; 5], vec![0.0; 5], vec![0.0; 5]);
        let (mut sa, mut sb) = (tables.scratch(), recursive.scratch());
        let mut i = 0usize;
        for x0 in choices[0] {
            for x1 in choices[1] {
                for x2 in choices[2] {
                    let x3 = choices[3][i % choices[3].len()];
                    i += 1;
                    let row = [*x0, *x1, *x2, x3];
                    let want = shapley(&forest, &row);
                    tables.contributions(&row, &mut sa, &mut a);
                    recursive.contributions(&row, &mut sb, &mut b);
                    decisions.contributions(&row, &mut sb, &mut c);
                    for k in 0..5 {
                        assert!((c[k] - want[k]).abs() < 1e-12, "{row:?} [{k}]: decisions {} vs {}", c[k], want[k]);
                        assert!((a[k] - want[k]).abs() < 1e-12, "{row:?} [{k}]: tables {} vs {}", a[k], want[k]);
                        assert!((b[k] - want[k]).abs() < 1e-12, "{row:?} [{k}]: recursive {} vs {}", b[k], want[k]);
                    }
                    let sum: f64 = a.iter().sum();
                    assert!((sum - forest.raw_score(&row)).abs() < 1e-12, "{row:?}: sum {sum}");
                }
            }
        }
    }
}
