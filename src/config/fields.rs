//! The per-set fields' one definition: the macro that writes them out (see its use in `model.rs`) and the
//! rules that merge a set's value over the default's.

use std::collections::BTreeMap;

use super::env::VarForm;

/// One per-set field, as `per_set_fields!` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerSetField {
    /// Its key in `[defaults]` and in each `[[sets]]`.
    pub name: &'static str,
    /// The upstream variable that sets it in the env fallback and how that writes it, if any.
    pub env: Option<(&'static str, VarForm)>,
    /// A valid TOML value unlike the built-in default (for tests and examples).
    pub sample: &'static str,
}

/// `merge: replace`: the set's value, else the default's.
pub fn replace<T: Clone>(set: &Option<T>, default: &Option<T>) -> Option<T> {
    set.as_ref().or(default.as_ref()).cloned()
}

/// `merge: extend`: the default's entries with the set's over them (the set's value wins per key).
pub fn extend<K: Ord + Clone, V: Clone>(
    set: &Option<BTreeMap<K, V>>,
    default: &Option<BTreeMap<K, V>>,
) -> Option<BTreeMap<K, V>> {
    match (set, default) {
        (Some(s), Some(d)) => {
            let mut merged = d.clone();
            merged.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(merged)
        }
        (s, d) => replace(s, d),
    }
}

/// Writes out the per-set fields listed once: the defaults struct (those fields alone), the set struct (its
/// own fields, then those), `PER_SET_FIELDS`, the merge of a set over the defaults (`over`), a set from
/// per-set values (`From`), and the env fallback's reading of them (`from_vars`). The grammar is documented
/// at its one use, in `model.rs`.
macro_rules! per_set_fields {
    (@env) => { None };
    (@env $var:literal, $form:expr) => { Some(($var, $form)) };
    // No variable: nothing to parse (typed, so that the unused value needs no annotation).
    (@parse $reader:ident) => { None::<serde_json::Value> };
    (@parse $reader:ident, $var:literal, $form:expr) => { $reader.parse($var, &$form) };
    (@typed $reader:ident, $value:ident) => {{
        let _ = $value;
        None
    }};
    (@typed $reader:ident, $value:ident, $var:literal, $form:expr) => { $reader.typed($var, &$form, $value) };
    (
        $(#[$defaults_meta:meta])*
        pub struct $defaults:ident;

        $(#[$set_meta:meta])*
        pub struct $set:ident { $($own:tt)* }

        fields {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $merge:ident,
                $(env $var:literal as $form:expr,)?
                sample $sample:literal,
                in_set $set_doc:literal $(, #[$($attr:tt)*])*;
            )*
        }
    ) => {
        $(#[$defaults_meta])*
        pub struct $defaults {
            $(
                $(#[doc = $doc])*
                $(#[$($attr)*])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        $(#[$set_meta])*
        pub struct $set {
            $($own)*
            $(
                #[doc = $set_doc]
                $(#[$($attr)*])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        /// Every per-set field, in the order of the structs.
        pub const PER_SET_FIELDS: &[$crate::config::fields::PerSetField] = &[
            $(
                $crate::config::fields::PerSetField {
                    name: stringify!($field),
                    env: per_set_fields!(@env $($var, $form)?),
                    sample: $sample,
                },
            )*
        ];

        impl $set {
            /// This set's per-set values merged over `defaults`, each by its `merge` rule; still unset where
            /// neither gives a value (the built-in default applies).
            pub fn over(&self, defaults: &$defaults) -> $defaults {
                $defaults {
                    $( $field: $crate::config::fields::$merge(&self.$field, &defaults.$field), )*
                }
            }
        }

        impl From<$defaults> for $set {
            /// A set with these per-set values and its own fields left empty.
            fn from(values: $defaults) -> Self {
                Self {
                    $( $field: values.$field, )*
                    ..Self::default()
                }
            }
        }

        impl $defaults {
            /// The per-set values the upstream variables give. Every variable is parsed before any is typed:
            /// problems keep the order the env fallback has always reported them in (JSON syntax first).
            pub(super) fn from_vars(reader: &mut $crate::config::env::VarReader<'_, '_>) -> Self {
                $( let $field = per_set_fields!(@parse reader $(, $var, $form)?); )*
                Self {
                    $( $field: per_set_fields!(@typed reader, $field $(, $var, $form)?), )*
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::PER_SET_FIELDS;
    use crate::config::{ImageSet, UPSTREAM_VARS, VarSource, load_from_vars, load_toml_str};

    struct Vars(BTreeMap<&'static str, String>);

    impl VarSource for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn label(&self, name: &str) -> String {
            name.to_owned()
        }
    }

    fn from_toml(defaults: &str, set: &str) -> ImageSet {
        let text = format!(
            "[defaults]\n{defaults}\n[[sets]]\nname = \"a\"\nimages = {{ a = \"registry.example/a:1\" }}\n{set}\n"
        );
        let mut config = load_toml_str(&text, "test.toml", &Vars(BTreeMap::new())).unwrap();
        config.sets.remove(0)
    }

    /// The sample (a TOML value) as the variable writes it.
    fn as_var(sample: &str, form: &VarForm) -> String {
        let value = toml::from_str::<toml::Table>(&format!("v = {sample}")).unwrap()["v"].clone();
        match (form, value) {
            (VarForm::Text, toml::Value::String(s)) => s,
            (VarForm::List, toml::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().expect("a list of strings"))
                .collect::<Vec<_>>()
                .join(";"),
            (VarForm::Json(_) | VarForm::KubernetesJson(_), value) => serde_json::to_string(&value).unwrap(),
            (_, value) => panic!("sample {value} does not suit its variable's form"),
        }
    }

    // The one list reaches every path: a field added to `per_set_fields!` is checked here with no other edit.
    #[test]
    fn each_per_set_field_flows_from_defaults_sets_and_env() {
        let plain = from_toml("", "");
        for field in PER_SET_FIELDS {
            let line = format!("{} = {}", field.name, field.sample);
            let from_defaults = from_toml(&line, "");
            assert_ne!(from_defaults, plain, "{}: the default's value is used", field.name);
            assert_eq!(
                from_toml("", &line),
                from_defaults,
                "{}: a set's value is used",
                field.name
            );
            let Some((var, form)) = &field.env else { continue };
            assert!(
                UPSTREAM_VARS.contains(var),
                "{var} is read from a mounted ConfigMap too"
            );
            let vars = Vars(BTreeMap::from([
                ("DAEMONSET_NAME", "a".to_owned()),
                ("IMAGES", "a=registry.example/a:1".to_owned()),
                (*var, as_var(field.sample, form)),
            ]));
            let mut config = load_from_vars(&vars, "environment").unwrap();
            // The one difference by design: the env fallback keeps the upstream refresh (interval).
            let want = ImageSet {
                refresh: crate::config::Refresh::Interval,
                ..from_defaults.clone()
            };
            assert_eq!(config.sets.remove(0), want, "{var}: sets {}", field.name);
        }
    }

    #[test]
    fn extend_keeps_the_defaults_keys_and_lets_the_set_win() {
        let set = Some(BTreeMap::from([("a", 1), ("b", 2)]));
        let default = Some(BTreeMap::from([("b", 0), ("c", 3)]));
        assert_eq!(
            extend(&set, &default),
            Some(BTreeMap::from([("a", 1), ("b", 2), ("c", 3)]))
        );
        assert_eq!(extend(&None, &default), default);
        assert_eq!(extend::<u8, u8>(&None, &None), None);
        assert_eq!(replace(&set, &default), set);
    }
}
