//! The TOML file: syntax errors and unknown keys (all of them, with line and column), then deserialization,
//! and the mapping from a field path back to where it is written in the file.

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Affinity;
use serde_json::Value as Schema;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problem;
use super::model::{RawConfig, json_schema};
use super::resolve::{FieldPath, Seg, dotted, dropped_field_message, dropped_fields, key};

/// A parsed document kept for locating fields.
pub struct TomlDoc<'t> {
    text: &'t str,
    origin: &'t str,
    root: Spanned<DeTable<'t>>,
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl<'t> TomlDoc<'t> {
    /// Parses the text, reporting every syntax error and unknown key; then deserializes it.
    pub fn parse(text: &'t str, origin: &'t str) -> Result<(Self, RawConfig), Vec<Problem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let doc = TomlDoc { text, origin, root };
        if !errors.is_empty() {
            return Err(errors.iter().map(|e| doc.toml_error(e)).collect());
        }
        // (byte offset, problem): reported in file order, not in the order the tables are walked.
        let mut problems: Vec<(usize, Problem)> = Vec::new();
        let in_file_order = |mut problems: Vec<(usize, Problem)>| {
            problems.sort_by_key(|(offset, _)| *offset);
            problems.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
        };
        let schema = schema();
        check_keys(schema, schema, doc.root.get_ref(), &mut Vec::new(), &doc, &mut problems);
        if !problems.is_empty() {
            return Err(in_file_order(problems));
        }
        // Deserialize from the tree already parsed (its strings borrow the text) instead of parsing again.
        let tree = Spanned::new(doc.root.span(), DeValue::Table(doc.root.get_ref().clone()));
        let raw = match <RawConfig as serde::Deserialize>::deserialize(toml::de::ValueDeserializer::from(tree)) {
            Ok(raw) => raw,
            Err(e) => {
                let mut problem = doc.toml_error(&e);
                if let Some(span) = e.span() {
                    problem.field = dotted(&doc.field_at(span.start));
                }
                return Err(vec![problem]);
            }
        };
        doc.check_affinities(&raw, &mut problems);
        if !problems.is_empty() {
            return Err(in_file_order(problems));
        }
        Ok((doc, raw))
    }

    /// The path of the deepest key or value whose span holds `offset` (where a type error points). Every
    /// node is visited: the span of an array of tables covers only its first `[[header]]`.
    fn field_at(&self, offset: usize) -> FieldPath {
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
        for (k, v) in self.root.get_ref() {
            let mut path = vec![Seg::Key(k.get_ref().to_string())];
            let span_hit = [k.span(), v.span()]
                .into_iter()
                .any(|s| s.start <= offset && offset < s.end.max(s.start + 1));
            if span_hit && best.is_empty() {
                best = path.clone();
            }
            walk(v.get_ref(), offset, &mut path, &mut best);
        }
        best
    }

    /// Kubernetes' own types ignore unknown fields: report the ones an `affinity` would lose.
    fn check_affinities(&self, raw: &RawConfig, out: &mut Vec<(usize, Problem)>) {
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
            }
        }
    }

    fn at(&self, offset: usize) -> String {
        let (line, col) = line_col(self.text, offset);
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
        let mut span = self.root.span();
        let mut current: Option<&DeValue<'_>> = None;
        let mut table = Some(self.root.get_ref());
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
        if self.root.span() == span && !path.is_empty() {
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

/// Reports every key the schema does not allow, with a "did you mean" when one is close.
fn check_keys(
    root: &Schema,
    schema: &Schema,
    table: &DeTable<'_>,
    path: &mut FieldPath,
    doc: &TomlDoc<'_>,
    out: &mut Vec<(usize, Problem)>,
) {
    let schema = resolve(root, schema);
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
                let hint = closest(name, &allowed)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                let mut field = path.clone();
                field.push(Seg::Key(name.to_owned()));
                out.push((
                    k.span().start,
                    Problem {
                        location: doc.at(k.span().start),
                        field: dotted(&field),
                        message: format!("unknown field `{name}`; {hint}allowed here: {}", allowed.join(", ")),
                    },
                ));
                continue;
            }
            (None, Some(s)) if s.is_object() => s,
            _ => continue,
        };
        path.push(Seg::Key(name.to_owned()));
        check_value(root, sub, v.get_ref(), path, doc, out);
        path.pop();
    }
}

fn check_value(
    root: &Schema,
    schema: &Schema,
    value: &DeValue<'_>,
    path: &mut FieldPath,
    doc: &TomlDoc<'_>,
    out: &mut Vec<(usize, Problem)>,
) {
    match value {
        DeValue::Table(t) => check_keys(root, schema, t, path, doc, out),
        DeValue::Array(items) => {
            let schema = resolve(root, schema);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    check_value(root, item_schema, item.get_ref(), path, doc, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
