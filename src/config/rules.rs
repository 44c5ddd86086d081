//! Single-value rules, in the form `validator` custom functions take. Messages say what is allowed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube_quantity::ParsedQuantity;
use validator::ValidationError;

use super::model::{TaintEffect, Toleration, TolerationOperator};

/// How many characters of a value an error quotes: a 50 MB value must not come back whole in a message,
/// and a digest-pinned image reference (about 100 characters) should.
pub const QUOTE_MAX_CHARS: usize = 120;
/// The longest message kept whole (messages of serde and toml quote values themselves).
pub const MESSAGE_MAX_CHARS: usize = 400;

/// A value as errors quote it: `"abc"`, or the first [`QUOTE_MAX_CHARS`] characters then `… (N bytes)`.
pub struct Quoted<'a>(&'a str);

pub fn q(s: &str) -> Quoted<'_> {
    Quoted(s)
}

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(QUOTE_MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// A name as a path or message shows it, unquoted: cut like [`Quoted`].
pub fn short(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(QUOTE_MAX_CHARS) {
        None => std::borrow::Cow::Borrowed(s),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len())),
    }
}

/// A message cut to [`MESSAGE_MAX_CHARS`] characters (with its full length), or None when it is short.
pub fn shorten_message(m: &str) -> Option<String> {
    let (cut, _) = m.char_indices().nth(MESSAGE_MAX_CHARS)?;
    Some(format!("{}… (message of {} bytes shortened)", &m[..cut], m.len()))
}

fn invalid(code: &'static str, message: String) -> ValidationError {
    ValidationError::new(code).with_message(Cow::Owned(message))
}

/// `Ok` when `valid`, else the error `code` with the message (written only when needed).
fn require(valid: bool, code: &'static str, message: impl FnOnce() -> String) -> Result<(), ValidationError> {
    if valid { Ok(()) } else { Err(invalid(code, message())) }
}

/// RFC 1123 label: what Kubernetes allows for namespaces, container names and (here) set names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, 253 characters at most (object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value or the name part of a qualified name: alphanumeric at both ends, `-_.` inside.
fn is_label_name(s: &str, allow_empty: bool) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return allow_empty;
    }
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A qualified name such as `nvidia.com/gpu.present` (label and annotation keys).
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name, false),
        None => is_label_name(s, false),
    }
}

pub fn is_label_value(s: &str) -> bool {
    is_label_name(s, true)
}

pub fn dns_label(s: &str) -> Result<(), ValidationError> {
    require(is_dns_label(s), "dns_label", || {
        format!(
            "{s_q} is not a valid name: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
            s_q = q(s)
        )
    })
}

pub fn dns_subdomain(s: &str) -> Result<(), ValidationError> {
    require(is_dns_subdomain(s), "dns_subdomain", || {
        format!(
            "{s_q} is not a valid object name: use lowercase letters, digits, '-' and '.', at most 253 characters, each dot-separated part starting and ending with a letter or digit",
            s_q = q(s)
        )
    })
}

pub fn dns_subdomain_list(names: &[String]) -> Result<(), ValidationError> {
    all_valid(
        names,
        is_dns_subdomain,
        "dns_subdomain",
        "Secret names (lowercase letters, digits, '-' and '.')",
    )
}

/// Every item passes `valid`, else one error quoting each one that does not: "`a`, `b` not valid {what}".
fn all_valid<'a>(
    items: impl IntoIterator<Item = &'a String>,
    valid: fn(&str) -> bool,
    code: &'static str,
    what: &str,
) -> Result<(), ValidationError> {
    let bad: Vec<String> = items
        .into_iter()
        .filter(|s| !valid(s))
        .map(|s| q(s).to_string())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(invalid(code, format!("{} not valid {what}", bad.join(", "))))
}

/// The largest quantity accepted: what the API server holds exactly (2^63 - 1 units).
const MAX_UNITS: i128 = i64::MAX as i128;
const NANOS_PER_UNIT: i128 = 1_000_000_000;

fn not_a_quantity(s: &str) -> String {
    format!(
        "{s_q} is not a quantity: use e.g. \"10Mi\", \"1Gi\", \"50m\" or \".05\"",
        s_q = q(s)
    )
}

/// The value of a Kubernetes quantity in nano-units (1e-9 of the unit), exact, rounded up below 1n as the API
/// server does. Follows the API's grammar (`[+-]digits[.digits](Ki..Ei | n,u,m,k,M,G,T,P,E | e[+-]digits)`),
/// and refuses negative values and values beyond what the API server can hold. Never panics.
pub fn quantity_nanos(s: &str) -> Result<i128, String> {
    let bad = || not_a_quantity(s);
    let b = s.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        &s[start..*i]
    };
    let int = digits(&mut i);
    let frac = if b.get(i) == Some(&b'.') {
        i += 1;
        digits(&mut i)
    } else {
        ""
    };
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    // value = mantissa * 10^exp10 * 2^exp2
    let (mut exp10, exp2): (i64, u32) = match &s[i..] {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            // Saturate: anything this far out is too large, or rounds up to 1n.
            let magnitude = unsigned.parse::<i64>().unwrap_or(i64::MAX).min(1000);
            (if e.starts_with('-') { -magnitude } else { magnitude }, 0)
        }
        _ => return Err(bad()),
    };
    // Trailing zeros of the fraction carry nothing; leading zeros of the mantissa neither.
    let frac = frac.trim_end_matches('0');
    let mut mantissa: u128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(c - b'0')))
            .filter(|m| *m < 1 << 64)
            .ok_or_else(|| format!("{s_q} has too many digits for a resource quantity", s_q = q(s)))?;
    }
    exp10 -= frac.len() as i64;
    let too_large = || {
        format!(
            "{s_q} is too large for a resource quantity (at most {MAX_UNITS})",
            s_q = q(s)
        )
    };
    // mantissa < 2^64 and exp2 <= 60, so this fits in u128.
    let scaled = mantissa << exp2;
    let shift = exp10 + 9; // to nano-units
    let nanos: u128 = if scaled == 0 {
        0
    } else if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .and_then(|p| scaled.checked_mul(p))
            .ok_or_else(too_large)?
    } else {
        match u32::try_from(-shift).ok().and_then(|e| 10u128.checked_pow(e)) {
            Some(p) => scaled.div_ceil(p),
            None => u128::from(scaled > 0), // below 1n: rounds up
        }
    };
    let nanos = i128::try_from(nanos)
        .ok()
        .filter(|n| *n <= MAX_UNITS * NANOS_PER_UNIT)
        .ok_or_else(too_large)?;
    if negative && nanos > 0 {
        return Err(format!(
            "{s_q} is negative: a resource quantity must be 0 or more",
            s_q = q(s)
        ));
    }
    Ok(nanos)
}

/// Parses a Kubernetes quantity (checked by [`quantity_nanos`]: grammar, not negative, not too large).
/// Compare quantities with [`quantity_nanos`]: `ParsedQuantity`'s own comparisons are approximate across
/// units (f32 factors) and can overflow.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, String> {
    quantity_nanos(s)?;
    ParsedQuantity::try_from(s).map_err(|_| not_a_quantity(s))
}

/// The shortest and longest `refresh_check_interval`.
pub const CHECK_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(10);
pub const CHECK_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A `refresh_check_interval`: a duration ("15m", "1h30m", "90s", jiff's friendly format) from 10s to 24h.
pub fn check_interval_of(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a duration: use e.g. \"15m\", \"1h\" or \"90s\"", q(s)))?;
    let d = std::time::Duration::try_from(d).map_err(|_| format!("{} is negative: use e.g. \"15m\"", q(s)))?;
    if d < CHECK_INTERVAL_MIN || d > CHECK_INTERVAL_MAX {
        return Err(format!("{} is out of range: from 10s to 24h", q(s)));
    }
    Ok(d)
}

pub fn check_interval(s: &str) -> Result<(), ValidationError> {
    check_interval_of(s).map(|_| ()).map_err(|m| invalid("duration", m))
}

pub fn quantity(s: &str) -> Result<(), ValidationError> {
    quantity_nanos(s).map(|_| ()).map_err(|m| invalid("quantity", m))
}

/// Why `v` is not a label value (to follow the quoted value), or None. Kubernetes `IsValidLabelValue`
/// (apimachinery pkg/util/validation): at most 63 characters (`LabelValueMaxLength`), matching
/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
pub fn label_value_problem(v: &str) -> Option<String> {
    if is_label_value(v) {
        None
    } else if v.len() > 63 {
        Some(format!("is {} characters: a label value is at most 63", v.len()))
    } else {
        Some("is not a valid label value (0-63 of letters, digits, '-', '_', '.', alphanumeric at both ends)".into())
    }
}

/// Node selector maps: label keys and values.
pub fn label_map(map: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut bad = Vec::new();
    for (k, v) in map {
        if !is_label_key(k) {
            bad.push(format!(
                "key {} is not a valid label key (optional DNS prefix and '/', then 1-63 of letters, digits, '-', '_', '.')",
                q(k)
            ));
        }
        if let Some(why) = label_value_problem(v) {
            bad.push(format!("value {} of {} {why}", q(v), q(k)));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(invalid("label", bad.join("; ")))
    }
}

/// The puller's Deployment name: an object name (DNS-1123 subdomain) that also becomes the value of the
/// `app.kubernetes.io/instance` label, so at most 63 characters (Kubernetes `IsValidLabelValue`).
pub fn deployment_name(s: &str) -> Result<(), ValidationError> {
    if s.len() > 63 {
        return Err(invalid(
            "label_value",
            format!(
                "{} is {} characters: it becomes the value of the label app.kubernetes.io/instance, and a label value is at most 63 characters",
                q(s),
                s.len()
            ),
        ));
    }
    dns_subdomain(s)
}

pub fn annotation_map(map: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    all_valid(
        map.keys(),
        is_label_key,
        "annotation",
        "annotation keys (optional DNS prefix and '/', then a name)",
    )
}

pub fn label_key(s: &str) -> Result<(), ValidationError> {
    require(s.is_empty() || is_label_key(s), "label_key", || {
        format!(
            "{s_q} is not a valid taint key (optional DNS prefix and '/', then a name)",
            s_q = q(s)
        )
    })
}

/// The common shapes of a reference, checked without a regex: `[host[:port]/]path[:tag][@sha256:<64 hex>]`
/// with lowercase path components. Accepts only what the full check below accepts (a test holds it to
/// that); anything else goes to the full check. oci-spec's pattern costs about 6 µs a reference, which a
/// config of thousands of images feels on every reload.
fn is_plain_reference(s: &str) -> bool {
    // Bytes classed by a table, the path and tag in one forward pass: a config of 10 000 images checks every
    // reference on each load, and the webhook answers within the API server's patience. Every separator is
    // ASCII, so never part of another character.
    let b = s.as_bytes();
    if b.len() > 255 {
        return false;
    }
    const DIGEST: &[u8] = b"@sha256:";
    let rest = match b.len().checked_sub(DIGEST.len() + 64) {
        Some(at) if b[at..].starts_with(DIGEST) => {
            if !b[at + DIGEST.len()..].iter().all(|c| class(*c) & HEX != 0) {
                return false;
            }
            &b[..at]
        }
        // Another digest algorithm, or an '@' elsewhere: the full check says what it is.
        _ => b,
    };
    // A first component before a '/' holding '.' or ':' (or "localhost") is the registry host, as Docker
    // reads it; everything else is repository path.
    let path = match rest.iter().position(|c| *c == b'/') {
        Some(slash) if is_registry_host(&rest[..slash]) => {
            if !host_and_port(&rest[..slash]) {
                return false;
            }
            &rest[slash + 1..]
        }
        _ => rest,
    };
    let name_end = match path_components(path) {
        Some(end) => end,
        None => return false,
    };
    match path.get(name_end + 1..) {
        None => true,
        // [\w][\w.-]{0,127}
        Some(tag) => {
            tag.first().is_some_and(|c| class(*c) & WORD != 0)
                && tag.len() <= 128
                && tag.iter().all(|c| class(*c) & TAG != 0)
        }
    }
}

/// Byte classes of the reference grammar, one bit each.
const LOWER_ALNUM: u8 = 1;
const ALNUM: u8 = 2;
const WORD: u8 = 4;
const TAG: u8 = 8;
const HEX: u8 = 16;
const PATH_SEP: u8 = 32;

const fn class(c: u8) -> u8 {
    const TABLE: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            let lower = b.is_ascii_lowercase();
            let digit = b.is_ascii_digit();
            let alnum = b.is_ascii_alphanumeric();
            let mut k = 0;
            if lower || digit {
                k |= LOWER_ALNUM;
            }
            if alnum {
                k |= ALNUM;
            }
            if alnum || b == b'_' {
                k |= WORD | TAG;
            }
            if b == b'.' || b == b'-' {
                k |= TAG;
            }
            if digit || (b >= b'a' && b <= b'f') {
                k |= HEX;
            }
            if b == b'.' || b == b'_' || b == b'-' {
                k |= PATH_SEP;
            }
            t[c] = k;
            c += 1;
        }
        t
    };
    TABLE[c as usize]
}

fn is_registry_host(first: &[u8]) -> bool {
    first == b"localhost" || first.iter().any(|c| matches!(c, b'.' | b':'))
}

/// `host[:port]`: host components `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` joined by '.', port digits.
fn host_and_port(b: &[u8]) -> bool {
    let (host, port) = match b.iter().position(|c| *c == b':') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let mut prev = b'.';
    for &c in host {
        let ok = match c {
            b'.' => class(prev) & ALNUM != 0,
            b'-' => prev != b'.',
            _ => class(c) & ALNUM != 0,
        };
        if !ok {
            return false;
        }
        prev = c;
    }
    class(prev) & ALNUM != 0 && port.is_none_or(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

/// Repository path components `[a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*` joined by '/', up to the end or a
/// ':' (the tag's). Returns where the path ends, or None when it breaks the grammar.
fn path_components(b: &[u8]) -> Option<usize> {
    // The run of separator bytes since the last letter or digit: (its byte, its length); at the start of a
    // component, a '/' stands in for it (no separator may follow).
    let mut sep = (b'/', 0usize);
    for (i, &c) in b.iter().enumerate() {
        let k = class(c);
        if k & LOWER_ALNUM != 0 {
            sep = (0, 0);
        } else if k & PATH_SEP != 0 {
            let ok = match sep {
                (0, 0) => true,
                (prev, n) => prev == c && (c == b'-' || (c == b'_' && n == 1)),
            };
            if !ok {
                return None;
            }
            sep = (c, sep.1 + 1);
        } else if c == b'/' || c == b':' {
            // A component ends on a letter or digit.
            if sep != (0, 0) {
                return None;
            }
            if c == b':' {
                return Some(i);
            }
            sep = (b'/', 0);
        } else {
            return None;
        }
    }
    (sep == (0, 0)).then_some(b.len())
}

/// Image references as a container runtime takes them: `[registry/]repo[:tag][@digest]`.
pub fn check_image_reference(s: &str) -> Result<(), String> {
    if is_plain_reference(s) {
        return Ok(());
    }
    let has_space = s.chars().any(char::is_whitespace);
    if s.is_empty() || has_space {
        return Err(format!(
            "{s_q} is not an image reference: give e.g. \"quay.io/org/image:tag\" with no spaces",
            s_q = q(s)
        ));
    }
    // oci-spec's pattern matches tags with `\w`, which in Rust regexes takes any Unicode letter.
    if !s.is_ascii() {
        return Err(format!(
            "{s_q} is not an image reference: only ASCII letters, digits and `/:@._-` are allowed",
            s_q = q(s)
        ));
    }
    // oci-spec takes any first component before a '/' for a registry; like Docker, only one with a '.' or
    // ':' (or "localhost") is a registry host, the others are repository path and must be lowercase.
    if let Some((first, _)) = s.split_once('/')
        && !first.contains(['.', ':'])
        && first.bytes().any(|c| c.is_ascii_uppercase())
    {
        return Err(format!(
            "{s_q} is not an image reference: the repository name {first_q} must be lowercase",
            s_q = q(s),
            first_q = q(first)
        ));
    }
    s.parse::<oci_spec::distribution::Reference>().map(|_| ()).map_err(|e| {
        format!(
            "{s_q} is not an image reference ({e}): give e.g. \"quay.io/org/image:tag\" or \"image@sha256:<64 hex>\"",
            s_q = q(s)
        )
    })
}

pub fn image_reference(s: &str) -> Result<(), ValidationError> {
    check_image_reference(s).map_err(|m| invalid("image", m))
}

/// The API server's own toleration rules (Kubernetes `validateTolerations`, pkg/apis/core/validation), checked
/// up front so that apply never fails on them. An empty operator means Equal and an empty effect means every
/// effect, as there.
pub fn toleration(t: &Toleration) -> Result<(), ValidationError> {
    let key_empty = t.key.as_deref().unwrap_or("").is_empty();
    let exists = t.operator == Some(TolerationOperator::Exists);
    if key_empty && !exists {
        return Err(invalid(
            "toleration",
            "a toleration with no key must have operator \"Exists\"".into(),
        ));
    }
    if exists && !t.value.as_deref().unwrap_or("").is_empty() {
        return Err(invalid(
            "toleration",
            "a toleration with operator \"Exists\" must not have a value".into(),
        ));
    }
    if let Some(v) = t.value.as_deref()
        && let Some(why) = label_value_problem(v)
    {
        let why = why.replace("a label value", "a taint value");
        let why = why.replace("valid label value", "valid taint value");
        return Err(invalid("toleration", format!("value {} {why}", q(v))));
    }
    if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
        return Err(invalid(
            "toleration",
            "tolerationSeconds is only allowed with effect \"NoExecute\"".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "gpu", "che-theia", "a1", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(is_label_key("nvidia.com/gpu.present"));
        assert!(is_label_key("pool"));
        assert!(!is_label_key("/pool"));
        assert!(!is_label_key("a/b/c"));
        assert!(!is_label_key("Bad_.com/x"));
        assert!(is_label_value(""));
        assert!(is_label_value("true"));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value("has space"));
    }

    #[test]
    fn quantities() {
        for ok in [".05", "50m", "0.05", "10Mi", "1Gi", "0", "1e3"] {
            assert!(parse_quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "abc", "10 Mi", " 1", "-1", "1Qi", "--1"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
        assert!(parse_quantity("20Mi").unwrap() > parse_quantity("10Mi").unwrap());
    }

    #[test]
    fn image_references() {
        for ok in [
            "quay.io/eclipse/che-theia:next",
            "busybox",
            "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
            "localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["", "UPPER/case", "a b", "quay.io/x:", "x@sha256:short", "x::y"] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }

    /// The shapes configs are made of take the fast path (the full check costs a regex each), and what the
    /// fast path refuses is what the grammar refuses, or a shape it leaves to the full check.
    #[test]
    fn common_references_take_the_fast_path() {
        let digest = "0123456789abcdef".repeat(4);
        for plain in [
            "busybox".to_owned(),
            "busybox:1.36".to_owned(),
            "quay.io/eclipse/che-theia:next".to_owned(),
            "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04".to_owned(),
            "localhost:5000/a/b".to_owned(),
            "127.0.0.1:5000/kip-e2e/sleeper:e2e".to_owned(),
            "my-Registry.example.com/team_a/x__y/a-b--c.d:v1_2-3.4".to_owned(),
            format!("registry.example.com/team-1/image-2@sha256:{digest}"),
            format!("localhost/a:tag@sha256:{digest}"),
            format!("a:{}", "t".repeat(128)),
        ] {
            assert!(is_plain_reference(&plain), "{plain}");
            assert!(check_image_reference(&plain).is_ok(), "{plain}");
        }
        for not_plain in [
            "".to_owned(),
            "a/".to_owned(),
            "/a".to_owned(),
            "a//b".to_owned(),
            "a..b".to_owned(),
            "a___b".to_owned(),
            "a._b".to_owned(),
            "-a".to_owned(),
            "a-".to_owned(),
            "a:".to_owned(),
            "a:-t".to_owned(),
            format!("a:{}", "t".repeat(129)),
            "Upper".to_owned(),
            "host-.io/a".to_owned(),
            "host..io/a".to_owned(),
            "host.io:/a".to_owned(),
            "host.io:50x/a".to_owned(),
            "a/b:c/d".to_owned(),
            format!("a@sha256:{}", digest.to_uppercase()),
            format!("a@sha512:{digest}{digest}"),
            format!("a@sha256:{digest}0"),
            "[::1]:5000/a".to_owned(),
        ] {
            assert!(!is_plain_reference(&not_plain), "{not_plain}");
        }
    }
}
