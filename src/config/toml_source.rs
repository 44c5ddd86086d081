//! The TOML file: syntax errors and unknown keys (all of them, with line and column), then deserialization,
//! and the mapping from a field path back to where it is written in the file.

use std::cell::OnceCell;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Affinity;
use serde_json::Value as Schema;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problem;
use super::model::{RawConfig, RawSet, json_schema};
use super::resolve::{FieldPath, Seg, dotted, dropped_field_message, dropped_fields, key, overlaps};
use super::rules::short;

/// A parsed document kept for locating fields.
pub struct TomlDoc<'t> {
    text: &'t str,
    origin: &'t str,
    /// The parsed document, for locating fields and copying parts after an error. The tree parsed first is
    /// handed to deserialization whole (a copy of it cost about a tenth of a load), so this is parsed again
    /// on the first use: only a config with problems gets that far.
    root: OnceCell<Spanned<DeTable<'t>>>,
    /// Byte offset of each line's start, built on the first location asked for: thousands of problems must not
    /// each count the newlines from the top.
    line_starts: OnceCell<Vec<usize>>,
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// What parsing found: the raw config (every part that deserialized), the problems located so far (unknown
/// keys, type errors, fields Kubernetes would drop) and the paths those problems concern, which were left
/// out of `raw` (what the later checks say about them, or about their absence, is a consequence).
pub struct Parsed<'t> {
    pub doc: TomlDoc<'t>,
    pub raw: RawConfig,
    pub problems: Vec<(usize, Problem)>,
    pub tainted: Vec<FieldPath>,
}

/// Type errors reported per part (the top-level fields, or one set) before giving up on it: each costs one
/// more deserialization of the part.
const MAX_TYPE_ERRORS_PER_PART: usize = 16;

impl<'t> TomlDoc<'t> {
    /// Parses the text: syntax errors are reported alone; otherwise every unknown key and type error (each
    /// set deserialized on its own, a wrong field left out and the rest tried again), then the raw config.
    pub fn parse(text: &'t str, origin: &'t str) -> Result<Parsed<'t>, Vec<Problem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let doc = TomlDoc {
            text,
            origin,
            root: OnceCell::new(),
            line_starts: OnceCell::new(),
        };
        if !errors.is_empty() {
            return Err(errors.iter().map(|e| doc.toml_error(e)).collect());
        }
        // (byte offset, problem): sorted into file order by the caller.
        let mut problems: Vec<(usize, Problem)> = Vec::new();
        let mut unknown: Vec<(FieldPath, Option<String>)> = Vec::new();
        let schema = schema();
        KeyCheck {
            root: schema,
            doc: &doc,
            out: &mut problems,
            unknown: &mut unknown,
        }
        .table(schema, root.get_ref(), &mut Vec::new());
        let mut tainted = Vec::new();
        // Deserialize from the tree already parsed (its strings borrow the text) instead of parsing again.
        let mut tree = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
        let mut left_out = Vec::new();
        for (path, suggestion) in unknown {
            remove_key(&mut tree, &path);
            // A misspelt key also explains what its intended sibling lacks ("image" → no `images`).
            if let Some(s) = suggestion {
                let mut sibling = path.clone();
                sibling.pop();
                sibling.push(Seg::Key(s));
                tainted.push(sibling);
            }
            tainted.push(path.clone());
            left_out.push(path);
        }
        let sets = match tree.get_mut() {
            DeValue::Table(t) => t.remove("sets"),
            _ => None,
        };
        let mut raw: RawConfig = doc
            .deserialize_lenient(tree, &Vec::new(), &left_out, &mut problems, &mut tainted)
            .unwrap_or_default();
        if let Some(sets) = sets {
            let span = sets.span();
            match sets.into_inner() {
                DeValue::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let base = vec![key("sets"), Seg::Index(i)];
                        let set = doc.deserialize_lenient(item, &base, &left_out, &mut problems, &mut tainted);
                        raw.sets.push(set.unwrap_or_else(|| {
                            // Keeps the numbering of the sets after it; nothing more is said about it.
                            tainted.push(base);
                            RawSet::default()
                        }));
                    }
                }
                other => {
                    // Not a list: deserializing it as one gives the error to report.
                    let base = vec![key("sets")];
                    let wrong = Spanned::new(span, other);
                    let sets: Option<Vec<RawSet>> =
                        doc.deserialize_lenient(wrong, &base, &left_out, &mut problems, &mut tainted);
                    raw.sets = sets.unwrap_or_default();
                    tainted.push(base);
                }
            }
        }
        doc.check_affinities(&raw, &mut problems, &mut tainted);
        Ok(Parsed {
            doc,
            raw,
            problems,
            tainted,
        })
    }

    /// Deserializes one part of the document (`base` is its path; `value` is that part with the `left_out`
    /// keys removed). On a type error the problem is recorded, the field holding it is left out and the part
    /// is tried again; None when the part itself is wrong. The first try takes `value` itself: a copy is made
    /// only after an error.
    fn deserialize_lenient<T: serde::de::DeserializeOwned>(
        &self,
        value: Spanned<DeValue<'t>>,
        base: &FieldPath,
        left_out: &[FieldPath],
        problems: &mut Vec<(usize, Problem)>,
        tainted: &mut Vec<FieldPath>,
    ) -> Option<T> {
        let first_taint = tainted.len();
        // Keys left out of this part because of its own type errors, relative to it.
        let mut wrong: Vec<FieldPath> = Vec::new();
        let mut attempt = value;
        for _ in 0..MAX_TYPE_ERRORS_PER_PART {
            let e = match T::deserialize(toml::de::ValueDeserializer::from(attempt)) {
                Ok(parsed) => return Some(parsed),
                Err(e) => e,
            };
            let mut value = self.part(base, left_out)?;
            for w in &wrong {
                remove_key(&mut value, w);
            }
            let offset = e.span().map_or(0, |s| s.start);
            let rel = e.span().map(|s| path_at(value.get_ref(), s.start)).unwrap_or_default();
            let mut full = base.clone();
            full.extend(rel.iter().cloned());
            // "missing field" where a wrong field was just left out is no news.
            if !tainted[first_taint..].iter().any(|t| overlaps(t, &full)) {
                let mut problem = self.toml_error(&e);
                problem.field = dotted(&full);
                problems.push((offset, problem));
            }
            tainted.push(full);
            // Leave out the innermost keyed field that holds the error (an item of an array cannot be taken
            // out without renumbering the items after it), then try again.
            let last_key = rel.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
            if !remove_key(&mut value, &rel[..=last_key]) {
                return None;
            }
            wrong.push(rel[..=last_key].to_vec());
            attempt = value;
        }
        None
    }

    /// A fresh copy of the part of the document at `base` (the whole document without `sets` when `base` is
    /// empty), with the `left_out` keys under it removed.
    fn part(&self, base: &FieldPath, left_out: &[FieldPath]) -> Option<Spanned<DeValue<'t>>> {
        let root = self.root();
        let mut value = match base.split_first() {
            None => {
                let mut rest = DeTable::new();
                for (k, v) in root.get_ref() {
                    if k.get_ref() != "sets" {
                        rest.insert(k.clone(), v.clone());
                    }
                }
                Spanned::new(root.span(), DeValue::Table(rest))
            }
            Some((Seg::Key(first), more)) => {
                let mut node = root.get_ref().get(first.as_str())?;
                for seg in more {
                    node = match (seg, node.get_ref()) {
                        (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
                        (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                        _ => return None,
                    };
                }
                node.clone()
            }
            Some((Seg::Index(_), _)) => return None,
        };
        for path in left_out {
            if let Some(rel) = path.strip_prefix(base.as_slice()) {
                remove_key(&mut value, rel);
            }
        }
        Some(value)
    }

    /// Kubernetes' own types ignore unknown fields: report the ones an `affinity` would lose.
    fn check_affinities(&self, raw: &RawConfig, out: &mut Vec<(usize, Problem)>, tainted: &mut Vec<FieldPath>) {
        let mut written: Vec<(FieldPath, Option<&Affinity>)> =
            vec![(vec![key("defaults"), key("affinity")], raw.defaults.affinity.as_ref())];
        for (i, set) in raw.sets.iter().enumerate() {
            written.push((vec![key("sets"), Seg::Index(i), key("affinity")], set.affinity.as_ref()));
        }
        let written: Vec<_> = written.into_iter().filter_map(|(p, a)| Some((p, a?))).collect();
        if written.is_empty() {
            return;
        }
        let Ok(given) = toml::from_str::<serde_json::Value>(self.text) else {
            return;
        };
        for (path, affinity) in written {
            let pointer: String = path
                .iter()
                .map(|seg| match seg {
                    Seg::Key(k) => format!("/{k}"),
                    Seg::Index(i) => format!("/{i}"),
                })
                .collect();
            let (Some(given), Ok(kept)) = (given.pointer(&pointer), serde_json::to_value(affinity)) else {
                continue;
            };
            for dropped in dropped_fields(given, &kept) {
                let mut full = path.clone();
                full.extend(dropped.iter().cloned());
                let (location, offset) = self.locate(&full);
                out.push((
                    offset,
                    Problem {
                        location,
                        field: dotted(&full),
                        message: dropped_field_message(&dropped),
                    },
                ));
                tainted.push(full);
            }
        }
    }

    /// The parsed document (see `root`): parsed again on the first call. The text parsed without a syntax
    /// error before, so it does again, to the same tree.
    fn root(&self) -> &Spanned<DeTable<'t>> {
        self.root.get_or_init(|| DeTable::parse_recoverable(self.text).0)
    }

    fn at(&self, offset: usize) -> String {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = offset.min(self.text.len());
        // The last line starting at or before the offset.
        let line = starts.partition_point(|start| *start <= offset);
        let start = starts[line.saturating_sub(1)];
        let col = self.text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{col}", self.origin)
    }

    fn toml_error(&self, e: &toml::de::Error) -> Problem {
        let location = e.span().map_or_else(|| self.origin.to_owned(), |s| self.at(s.start));
        Problem {
            location,
            field: String::new(),
            message: e.message().trim().to_owned(),
        }
    }

    /// `file:line:col` of the deepest part of `path` present in the file (the field, or its set), and its
    /// byte offset for ordering.
    pub fn locate(&self, path: &FieldPath) -> (String, usize) {
        let root = self.root();
        let mut span = root.span();
        let mut current: Option<&DeValue<'_>> = None;
        let mut table = Some(root.get_ref());
        for seg in path {
            let next = match (seg, table, current) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(key, _)| key.get_ref() == k)
                    .map(|(key, v)| (key.span(), v)),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((s, v)) = next else { break };
            span = s;
            current = Some(v.get_ref());
            table = v.get_ref().as_table();
        }
        if root.span() == span && !path.is_empty() {
            return (self.origin.to_owned(), 0);
        }
        (self.at(span.start), span.start)
    }
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(json_schema)
}

/// Follows `$ref` and unwraps `Option<T>` (`anyOf: [T, null]`) to the schema that describes a value.
fn resolve<'s>(root: &'s Schema, mut s: &'s Schema) -> &'s Schema {
    for _ in 0..8 {
        if let Some(r) = s.get("$ref").and_then(Schema::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(target) => s = target,
                None => return s,
            }
        } else if let Some(branch) = s.get("anyOf").and_then(Schema::as_array).and_then(|bs| {
            bs.iter()
                .find(|b| b.get("type").and_then(Schema::as_str) != Some("null"))
        }) {
            s = branch;
        } else {
            return s;
        }
    }
    s
}

/// Reports every key the schema does not allow, with a "did you mean" when one is close, and collects the
/// paths of those keys (with the suggestion) in `unknown`.
struct KeyCheck<'c, 't> {
    root: &'c Schema,
    doc: &'c TomlDoc<'t>,
    out: &'c mut Vec<(usize, Problem)>,
    unknown: &'c mut Vec<(FieldPath, Option<String>)>,
}

impl KeyCheck<'_, '_> {
    fn table(&mut self, schema: &Schema, table: &DeTable<'_>, path: &mut FieldPath) {
        let schema = resolve(self.root, schema);
        let props = schema.get("properties").and_then(Schema::as_object);
        let extra = schema.get("additionalProperties");
        for (k, v) in table {
            let name: &str = k.get_ref();
            let sub = match (props.and_then(|p| p.get(name)), extra) {
                (Some(s), _) => s,
                (None, Some(Schema::Bool(false))) => {
                    let allowed: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let suggestion = closest(name, &allowed);
                    let hint = suggestion.map(|c| format!("did you mean `{c}`? ")).unwrap_or_default();
                    let mut field = path.clone();
                    field.push(Seg::Key(name.to_owned()));
                    self.out.push((
                        k.span().start,
                        Problem {
                            location: self.doc.at(k.span().start),
                            field: dotted(&field),
                            message: format!(
                                "unknown field `{}`; {hint}allowed here: {}",
                                short(name),
                                allowed.join(", ")
                            ),
                        },
                    ));
                    self.unknown.push((field, suggestion.map(str::to_owned)));
                    continue;
                }
                (None, Some(s)) if s.is_object() => s,
                _ => continue,
            };
            // Only tables and arrays hold keys to check (an image set holds thousands of plain values).
            if !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                continue;
            }
            path.push(Seg::Key(name.to_owned()));
            self.value(sub, v.get_ref(), path);
            path.pop();
        }
    }

    fn value(&mut self, schema: &Schema, value: &DeValue<'_>, path: &mut FieldPath) {
        match value {
            DeValue::Table(t) => self.table(schema, t, path),
            DeValue::Array(items) => {
                let schema = resolve(self.root, schema);
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        self.value(item_schema, item.get_ref(), path);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }
}

/// The path of the deepest key or value under `value` whose span holds `offset` (where a type error
/// points). Every node is visited: the span of an array of tables covers only its first `[[header]]`.
fn path_at(value: &DeValue<'_>, offset: usize) -> FieldPath {
    fn walk(value: &DeValue<'_>, offset: usize, path: &mut FieldPath, best: &mut FieldPath) {
        let contains = |span: std::ops::Range<usize>| span.start <= offset && offset < span.end.max(span.start + 1);
        let mut visit = |seg: Seg, spans: [std::ops::Range<usize>; 2], child: &DeValue<'_>| {
            path.push(seg);
            if spans.into_iter().any(contains) && path.len() > best.len() {
                *best = path.clone();
            }
            walk(child, offset, path, best);
            path.pop();
        };
        match value {
            DeValue::Table(t) => {
                for (k, v) in t {
                    visit(Seg::Key(k.get_ref().to_string()), [k.span(), v.span()], v.get_ref());
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    visit(Seg::Index(i), [v.span(), v.span()], v.get_ref());
                }
            }
            _ => {}
        }
    }
    let mut best = Vec::new();
    walk(value, offset, &mut Vec::new(), &mut best);
    best
}

/// Removes the key at the end of `path` from the table it leads to; false when there is none.
fn remove_key(value: &mut Spanned<DeValue<'_>>, path: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut current = value.get_mut();
    for seg in parents {
        let next = match (seg, current) {
            (Seg::Key(k), DeValue::Table(t)) => t.get_mut(k.as_str()),
            (Seg::Index(i), DeValue::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        current = next.get_mut();
    }
    match current {
        DeValue::Table(t) => t.remove(last.as_str()).is_some(),
        _ => false,
    }
}

fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    // A key far longer than any allowed is no misspelling (and comparing a huge one costs time).
    if name.len() > 64 {
        return None;
    }
    allowed
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
