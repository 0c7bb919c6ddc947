//! Lists (`rules/lists/NAME.txt`) and the sets behind `in`.
//!
//! A list file holds one value per line; `#` starts a comment, blank lines
//! are ignored. A `# type: string|number|cidr` header line before the first
//! value declares the kind; without one, a list whose every value is an IP
//! address or CIDR range is a CIDR list and any other list is a string list.
//!
//! Membership is decided without allocating: strings through a hash table
//! whose hash can be computed over a lower/upper-cased view of the input,
//! CIDR ranges as merged sorted intervals (binary search), numbers as a
//! sorted vector.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::diag::{AuthorError, Diagnostic, SourceFile, Span};
use crate::eval::FStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    Str,
    Num,
    Cidr,
}

impl ListKind {
    pub fn describe(self) -> &'static str {
        match self {
            ListKind::Str => "strings",
            ListKind::Num => "numbers",
            ListKind::Cidr => "IP addresses / CIDR ranges",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum ListData {
    Str(Arc<StrSet>),
    Num(Arc<NumSet>),
    Cidr(Arc<CidrSet>),
}

impl ListData {
    pub fn kind(&self) -> ListKind {
        match self {
            ListData::Str(_) => ListKind::Str,
            ListData::Num(_) => ListKind::Num,
            ListData::Cidr(_) => ListKind::Cidr,
        }
    }
}

/// Every list of a rule set, by name (file stem).
#[derive(Clone, Debug, Default)]
pub(crate) struct Lists {
    pub by_name: BTreeMap<String, ListData>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum ListError {
    #[error("`{0}` is not an IP address or CIDR range")]
    BadCidr(String),
    #[error("`{0}` is not a number")]
    BadNumber(String),
    #[error("unknown list type `{0}`")]
    BadType(String),
    #[error("list file name `{0}` is not a valid list name")]
    BadName(String),
}

impl AuthorError for ListError {
    fn code(&self) -> &'static str {
        match self {
            ListError::BadCidr(_) | ListError::BadNumber(_) => "E-LIST-ENTRY",
            ListError::BadType(_) => "E-LIST-TYPE",
            ListError::BadName(_) => "E-LIST-NAME",
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            ListError::BadCidr(_) => {
                Some("a CIDR list holds addresses like 10.66.0.0/16, 10.1.2.3 or 2001:db8::/32".into())
            }
            ListError::BadType(_) => {
                Some("the header reads `# type: string`, `# type: number` or `# type: cidr`".into())
            }
            ListError::BadName(_) => {
                Some("name list files with letters, digits and `_` only, e.g. `risky_ip_ranges.txt`".into())
            }
            ListError::BadNumber(_) => None,
        }
    }
}

/// Loads every `*.txt` file of `dir` (if it exists). Each file is also given
/// to `on_file` (display name, bytes) for the lists version hash.
pub(crate) fn load_dir(
    dir: &Path,
    display_dir: &str,
    diags: &mut Vec<Diagnostic>,
    on_file: &mut dyn FnMut(&str, &[u8]),
) -> Lists {
    let mut lists = Lists::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return lists;
    };
    let mut paths: Vec<_> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "txt")).collect();
    paths.sort();
    for path in paths {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let display = format!("{display_dir}/{file_name}");
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                diags.push(Diagnostic::for_file("E-IO", &display, format!("cannot read the list: {e}")));
                continue;
            }
        };
        on_file(&format!("lists/{file_name}"), &text);
        let text = String::from_utf8_lossy(&text).into_owned();
        let src = SourceFile::new(display, text);
        let name = file_name.trim_end_matches(".txt").to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            diags.push(Diagnostic::from_error(&src, 0..0, &ListError::BadName(file_name.clone())));
            continue;
        }
        if let Some(data) = parse_list(&src, diags) {
            lists.by_name.insert(name, data);
        }
    }
    lists
}

/// Parses one list file; `None` when it has errors (they are reported).
pub(crate) fn parse_list(src: &SourceFile, diags: &mut Vec<Diagnostic>) -> Option<ListData> {
    let mut declared: Option<ListKind> = None;
    let mut entries: Vec<(Span, &str)> = Vec::new();
    let mut offset = 0;
    let mut ok = true;
    for raw_line in src.text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let (value, comment) = match line.find('#') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        let value_trim = value.trim();
        if value_trim.is_empty() {
            if let (Some(c), true) = (comment, entries.is_empty()) {
                let c = c.trim();
                if let Some(t) = c.strip_prefix("type:") {
                    let t = t.trim();
                    declared = match t {
                        "string" | "strings" => Some(ListKind::Str),
                        "number" | "numbers" => Some(ListKind::Num),
                        "cidr" | "ip" => Some(ListKind::Cidr),
                        _ => {
                            let at = line_start + line.find(t).unwrap_or(0);
                            diags.push(Diagnostic::from_error(
                                src,
                                at..at + t.len(),
                                &ListError::BadType(t.to_string()),
                            ));
                            ok = false;
                            None
                        }
                    };
                }
            }
            continue;
        }
        let at = line_start + (value.len() - value.trim_start().len());
        entries.push((at..at + value_trim.len(), value_trim));
    }
    let kind = declared.unwrap_or_else(|| {
        if !entries.is_empty() && entries.iter().all(|(_, v)| parse_cidr(v).is_some()) {
            ListKind::Cidr
        } else {
            ListKind::Str
        }
    });
    let data = match kind {
        ListKind::Str => ListData::Str(Arc::new(StrSet::new(entries.iter().map(|(_, v)| *v)))),
        ListKind::Num => {
            let mut nums = Vec::with_capacity(entries.len());
            for (span, v) in &entries {
                match v.replace('_', "").parse::<f64>() {
                    Ok(n) if n.is_finite() => nums.push(n),
                    _ => {
                        diags.push(Diagnostic::from_error(src, span.clone(), &ListError::BadNumber(v.to_string())));
                        ok = false;
                    }
                }
            }
            ListData::Num(Arc::new(NumSet::new(nums)))
        }
        ListKind::Cidr => {
            let mut nets = Vec::with_capacity(entries.len());
            for (span, v) in &entries {
                match parse_cidr(v) {
                    Some(n) => nets.push(n),
                    None => {
                        diags.push(Diagnostic::from_error(src, span.clone(), &ListError::BadCidr(v.to_string())));
                        ok = false;
                    }
                }
            }
            ListData::Cidr(Arc::new(CidrSet::new(nets)))
        }
    };
    ok.then_some(data)
}

/// An address range: the network address and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// `10.0.0.0/8`, `10.1.2.3` (a single address), `2001:db8::/32`.
pub(crate) fn parse_cidr(s: &str) -> Option<Net> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (s.trim(), None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u8>().ok().filter(|&p| p <= max)?
        }
        None => max,
    };
    Some(Net { addr, prefix })
}

/// A set of strings. Lookups hash the (possibly case-folded) characters of
/// the input as they are produced, so `lower(x) in list('a')` allocates
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct StrSet {
    entries: Vec<Box<str>>,
    /// hash -> first entry with that hash; further ones chain through `next`.
    head: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl StrSet {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = StrSet::default();
        for v in values {
            let h = hash_chars(v.chars());
            if set.lookup(h, FStr::plain(v)) {
                continue;
            }
            let idx = set.entries.len() as u32;
            set.entries.push(v.into());
            let prev = set.head.insert(h, idx).unwrap_or(NONE);
            set.next.push(prev);
        }
        set
    }

    #[inline]
    pub fn contains(&self, s: FStr<'_>) -> bool {
        let h = if s.is_plain() { hash_bytes(s.raw().as_bytes()) } else { hash_chars(s.chars()) };
        self.lookup(h, s)
    }

    fn lookup(&self, h: u64, s: FStr<'_>) -> bool {
        let mut idx = self.head.get(&h).copied().unwrap_or(NONE);
        while idx != NONE {
            if s.eq_str(&self.entries[idx as usize]) {
                return true;
            }
            idx = self.next[idx as usize];
        }
        false
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// FNV-1a over UTF-8 bytes: the same value whether fed bytes or characters.
#[inline]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[inline]
fn hash_chars(chars: impl Iterator<Item = char>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u8; 4];
    for c in chars {
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The keys are already hashes.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of numbers (sorted; `-0` is `0`).
#[derive(Debug, Default)]
pub(crate) struct NumSet {
    values: Vec<f64>,
}

impl NumSet {
    pub fn new(mut values: Vec<f64>) -> Self {
        for v in &mut values {
            *v += 0.0;
        }
        values.sort_by(f64::total_cmp);
        values.dedup();
        NumSet { values }
    }

    #[inline]
    pub fn contains(&self, x: f64) -> bool {
        let x = x + 0.0;
        self.values.binary_search_by(|v| v.total_cmp(&x)).is_ok()
    }
}

/// A set of IPv4 and IPv6 ranges, merged into sorted disjoint intervals.
/// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are matched as IPv4.
#[derive(Debug, Default)]
pub(crate) struct CidrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    pub fn new(nets: Vec<Net>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in nets {
            match n.addr {
                IpAddr::V4(a) => {
                    let host_bits = 32 - u32::from(n.prefix);
                    let mask = if host_bits == 32 { 0 } else { u32::MAX << host_bits };
                    let start = u32::from(a) & mask;
                    v4.push((start, start | !mask));
                }
                IpAddr::V6(a) => {
                    if let Some(m) = a.to_ipv4_mapped().filter(|_| n.prefix >= 96) {
                        let host_bits = 128 - u32::from(n.prefix);
                        let mask = if host_bits == 32 { 0 } else { u32::MAX << host_bits };
                        let start = u32::from(m) & mask;
                        v4.push((start, start | !mask));
                        continue;
                    }
                    let host_bits = 128 - u32::from(n.prefix);
                    let mask = if host_bits == 128 { 0 } else { u128::MAX << host_bits };
                    let start = u128::from(a) & mask;
                    v6.push((start, start | !mask));
                }
            }
        }
        CidrSet { v4: merge(v4), v6: merge(v6) }
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => in_ranges(&self.v4, u32::from(m)),
                None => in_ranges(&self.v6, u128::from(a)),
            },
        }
    }
}

fn merge<T: Ord + Copy + num_like::One>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        if let Some(last) = out.last_mut() {
            // Overlapping or adjacent ranges become one.
            if s <= last.1 || last.1.succ() == Some(s) {
                if e > last.1 {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out
}

#[inline]
fn in_ranges<T: Ord + Copy>(r: &[(T, T)], x: T) -> bool {
    let i = r.partition_point(|&(s, _)| s <= x);
    i > 0 && r[i - 1].1 >= x
}

mod num_like {
    pub trait One: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl One for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl One for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Case;

    #[test]
    fn cidr_sets() {
        let nets = ["10.66.0.0/16", "10.67.0.0/16", "192.168.1.7", "2001:db8::/32", "::ffff:172.16.0.0/108"]
            .iter()
            .map(|s| parse_cidr(s).unwrap_or_else(|| panic!("{s}")))
            .collect();
        let set = CidrSet::new(nets);
        assert_eq!(set.v4.len(), 3, "adjacent /16s merge: {:?}", set.v4);
        let has = |s: &str| set.contains(s.parse().unwrap_or_else(|_| panic!("{s}")));
        assert!(has("10.66.0.0") && has("10.67.255.255") && !has("10.68.0.0") && !has("10.65.255.255"));
        assert!(has("192.168.1.7") && !has("192.168.1.8"));
        assert!(has("2001:db8:1::1") && !has("2001:db9::1"));
        assert!(has("::ffff:10.66.1.1") && has("172.16.3.4"));
        assert!(
            parse_cidr("10.0.0.0/33").is_none() && parse_cidr("10.0.0/8").is_none() && parse_cidr("::/0").is_some()
        );
        let all = CidrSet::new(vec![parse_cidr("0.0.0.0/0").unwrap_or_else(|| panic!())]);
        assert!(all.contains("255.255.255.255".parse().unwrap_or_else(|_| panic!())));
    }

    #[test]
    fn string_sets_with_case_folding() {
        let set = StrSet::new(["abc", "Déjà", "x", "abc"]);
        assert_eq!(set.len(), 3);
        assert!(set.contains(FStr::plain("abc")));
        assert!(!set.contains(FStr::plain("ABC")));
        assert!(set.contains(FStr::new("ABC", Case::Lower)));
        assert!(!set.contains(FStr::new("DÉJÀ", Case::Lower)));
        assert!(set.contains(FStr::plain("Déjà")));
    }
}
