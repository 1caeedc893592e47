//! Kubernetes label selectors in their string form (`app=web,tier!=db,env in (a,b),!x`):
//! parsing, matching against a label map, and printing. Requirements are ANDed; an
//! empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::names;
use crate::v1;

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Comparison.
    pub op: Operator,
    /// Values compared against; one for (Not)Equals, one or more for (Not)In, none
    /// for (Does Not)Exist.
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether the labels satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = || value.is_some_and(|v| self.values.contains(v));
        match self.op {
            Operator::Equals | Operator::In => listed(),
            Operator::NotEquals | Operator::NotIn => !listed(),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses the string form; an empty or blank string is the match-everything selector.
    pub fn parse(s: &str) -> Result<Selector> {
        if s.trim().is_empty() {
            return Ok(Selector::default());
        }
        let requirements = split_top_level(s)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>>>()?;
        Ok(Selector { requirements })
    }

    /// Converts a structured [`v1::LabelSelector`] (matchLabels, then matchExpressions):
    /// keys and values are checked as in the string form; an unknown operator, `In` or
    /// `NotIn` without values, or `Exists` with values is an error naming the
    /// requirement. An empty `LabelSelector` matches everything.
    pub fn from_label_selector(ls: &v1::LabelSelector) -> Result<Selector> {
        let mut requirements = Vec::new();
        for (key, value) in &ls.match_labels {
            let part = format!("{key}={value}");
            check_key(&part, key)?;
            names::label_value(value).map_err(|r| err(&part, format!("invalid value: {r}")))?;
            requirements.push(Requirement {
                key: key.clone(),
                op: Operator::Equals,
                values: vec![value.clone()],
            });
        }
        for e in &ls.match_expressions {
            let part = format!("{} {} ({})", e.key, e.operator, e.values.join(","));
            check_key(&part, &e.key)?;
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(err(
                        &part,
                        format!(
                            "unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ))
                }
            };
            let needs_values = matches!(op, Operator::In | Operator::NotIn);
            if needs_values && e.values.is_empty() {
                return Err(err(&part, "In and NotIn need at least one value"));
            }
            if !needs_values && !e.values.is_empty() {
                return Err(err(&part, "Exists and DoesNotExist take no values"));
            }
            for v in &e.values {
                names::label_value(v).map_err(|r| err(&part, format!("invalid value: {r}")))?;
            }
            requirements.push(Requirement {
                key: e.key.clone(),
                op,
                values: e.values.clone(),
            });
        }
        Ok(Selector { requirements })
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches_object(&self, obj: &v1::Object) -> bool {
        self.matches(&obj.metadata().labels)
    }
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Selector> {
        Selector::parse(s)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map_or("", String::as_str);
        match self.op {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

impl fmt::Display for Selector {
    /// The canonical string form, which parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn err(part: &str, reason: impl Into<String>) -> Error {
    Error::Selector {
        part: part.trim().to_string(),
        reason: reason.into(),
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(err(&s[start..], "nested '('")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(err(&s[start..=i], "')' without '('")),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(err(&s[start..], "missing ')'"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement> {
    let p = part.trim();
    if p.is_empty() {
        return Err(err(part, "empty requirement (stray ',')"));
    }
    if let Some(open) = p.find('(') {
        return parse_set(p, open);
    }
    let (key, op, value) = if let Some((k, v)) = p.split_once("!=") {
        (k, Operator::NotEquals, Some(v))
    } else if let Some((k, v)) = p.split_once("==") {
        (k, Operator::Equals, Some(v))
    } else if let Some((k, v)) = p.split_once('=') {
        (k, Operator::Equals, Some(v))
    } else if let Some(k) = p.strip_prefix('!') {
        (k, Operator::DoesNotExist, None)
    } else {
        (p, Operator::Exists, None)
    };
    let key = key.trim();
    check_key(p, key)?;
    let values = match value {
        Some(v) => {
            let v = v.trim();
            if v.starts_with('=') {
                return Err(err(p, "unexpected '=' in value"));
            }
            names::label_value(v).map_err(|r| err(p, format!("invalid value: {r}")))?;
            vec![v.to_string()]
        }
        None => Vec::new(),
    };
    Ok(Requirement {
        key: key.to_string(),
        op,
        values,
    })
}

/// `key in (a,b)` / `key notin (a)`; `open` is the index of '('.
fn parse_set(p: &str, open: usize) -> Result<Requirement> {
    let inner = p[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| err(p, "text after ')'"))?;
    let mut head = p[..open].split_whitespace();
    let (key, op) = match (head.next(), head.next(), head.next()) {
        (Some(k), Some("in"), None) => (k, Operator::In),
        (Some(k), Some("notin"), None) => (k, Operator::NotIn),
        _ => return Err(err(p, "expected `key in (values)` or `key notin (values)`")),
    };
    check_key(p, key)?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().all(String::is_empty) {
        return Err(err(p, "a set needs at least one value"));
    }
    for v in &values {
        names::label_value(v).map_err(|r| err(p, format!("invalid value: {r}")))?;
    }
    Ok(Requirement {
        key: key.to_string(),
        op,
        values,
    })
}

fn check_key(part: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(err(part, "missing key"));
    }
    names::qualified_name(key).map_err(|r| err(part, format!("invalid key: {r}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_table() {
        let web = labels(&[("app", "web"), ("tier", "frontend"), ("env", "")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("missing in (x)", false),
            ("app notin (db, cache)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("env=", true),
            ("env", true),
            ("app=web,tier=frontend", true),
            ("app=web,tier=backend", false),
            ("app in (web),tier notin (db),!gone,env", true),
            ("example.com/team", false),
        ];
        for (sel, want) in cases {
            let parsed = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(parsed.matches(&web), *want, "{sel:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_offending_part() {
        let cases: &[(&str, &str)] = &[
            ("app=web,,tier=x", ""),
            ("app=web,tier in (a", "tier in (a"),
            ("app in a)", "app in a)"),
            ("app=web,Bad Key=x", "Bad Key=x"),
            ("app=not valid", "app=not valid"),
            ("app in ()", "app in ()"),
            ("app within (a)", "app within (a)"),
            ("app in (a)x", "app in (a)x"),
            ("=x", "=x"),
            ("app===x", "app===x"),
            ("app in ((a))", "app in ((a))"),
        ];
        for (sel, part) in cases {
            match Selector::parse(sel) {
                Err(Error::Selector { part: got, .. }) => assert_eq!(got, *part, "{sel:?}"),
                other => panic!("{sel:?}: expected a selector error, got {other:?}"),
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for sel in ["app=web", "a!=b,c in (x,y),d notin (z),e,!f", ""] {
            let parsed = Selector::parse(sel).unwrap();
            assert_eq!(parsed.to_string(), sel);
            assert_eq!(Selector::parse(&parsed.to_string()).unwrap(), parsed);
        }
        assert_eq!(Selector::parse("a==b").unwrap().to_string(), "a=b");
    }

    #[test]
    fn matches_object_uses_metadata_labels() {
        let mut obj = v1::Object::from_pod(v1::Pod::default());
        let sel = Selector::parse("app=web").unwrap();
        assert!(!sel.matches_object(&obj));
        assert!(Selector::parse("!app").unwrap().matches_object(&obj));
        obj.metadata_mut().labels = labels(&[("app", "web")]);
        assert!(sel.matches_object(&obj));
    }
}
