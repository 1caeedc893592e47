//! Manifests: decoding Kubernetes-shaped YAML (multi-document) or JSON into
//! [`v1::Object`]s, and encoding objects back. This is the one place where the object
//! envelope meets `apiVersion`/`kind`; the typed bodies use the serde derives generated
//! from the protos, so an unknown field or a wrong type is reported with its path.
//! No validation or defaulting happens here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::kind::{for_each_kind, Kind};
use crate::v1::{self, object::Kind as Oneof};

/// The `kind` of a manifest wrapping several objects in `items`.
const LIST_KIND: &str = "List";

/// Decodes a YAML stream (documents separated by `---`) or JSON text into objects.
///
/// JSON is recognised by a leading `{` or `[`; a JSON array or a `kind: List` document
/// contributes each of its items. Empty documents are skipped.
pub fn decode(input: &str) -> Result<Vec<v1::Object>> {
    let mut out = Vec::new();
    for (document, value) in documents(input)?.into_iter().enumerate() {
        decode_value(document, value, &mut out)?;
    }
    Ok(out)
}

/// Decodes a manifest that must hold exactly one object.
pub fn decode_one(input: &str) -> Result<v1::Object> {
    let mut objs = decode(input)?;
    match objs.len() {
        1 => Ok(objs.remove(0)),
        n => Err(Error::Decode {
            document: 0,
            path: ".".into(),
            reason: format!("expected exactly one object, found {n}"),
        }),
    }
}

/// Encodes one object as a YAML document, `apiVersion` and `kind` first; empty strings,
/// lists, maps and unset fields are omitted, numbers and bools always written.
pub fn to_yaml(obj: &v1::Object) -> Result<String> {
    serde_yaml_ng::to_string(&Typed::of(obj)?).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })
}

/// Encodes objects as a YAML stream, documents separated by `---`.
pub fn to_yaml_all(objs: &[v1::Object]) -> Result<String> {
    let docs = objs.iter().map(to_yaml).collect::<Result<Vec<_>>>()?;
    Ok(docs.join("---\n"))
}

/// Encodes one object as pretty-printed JSON, shaped like [`to_yaml`].
pub fn to_json(obj: &v1::Object) -> Result<String> {
    serde_json::to_string_pretty(&Typed::of(obj)?).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })
}

/// The object as a Kubernetes-shaped JSON value (keys sorted, so `apiVersion` and
/// `kind` still come first), for callers that assemble their own documents.
pub fn to_json_value(obj: &v1::Object) -> Result<Value> {
    serde_json::to_value(Typed::of(obj)?).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })
}

/// Encodes objects as a pretty-printed JSON `{"apiVersion":"v1","kind":"List","items":[..]}`.
pub fn to_json_list(objs: &[v1::Object]) -> Result<String> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a> {
        api_version: &'static str,
        kind: &'static str,
        items: Vec<Typed<'a>>,
    }
    let items = objs.iter().map(Typed::of).collect::<Result<Vec<_>>>()?;
    let list = List {
        api_version: "v1",
        kind: LIST_KIND,
        items,
    };
    serde_json::to_string_pretty(&list).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })
}

/// An object with its `apiVersion` and `kind` in front, for serialization only.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typed<'a> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    body: Body<'a>,
}

macro_rules! body {
    ($($k:ident),*) => {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Body<'a> {
            $($k(&'a v1::$k),)*
        }

        impl<'a> Typed<'a> {
            fn of(obj: &'a v1::Object) -> Result<Self> {
                let (kind, body) = match obj.kind.as_ref().ok_or(Error::EmptyObject)? {
                    $(Oneof::$k(o) => (Kind::$k, Body::$k(o)),)*
                };
                Ok(Typed {
                    api_version: kind.api_version(),
                    kind: kind.as_str(),
                    body,
                })
            }
        }

        /// Decodes the body of a manifest whose kind is known.
        fn typed_object(document: usize, kind: Kind, body: Value) -> Result<v1::Object> {
            Ok(match kind {
                $(Kind::$k => v1::Object::from(typed::<v1::$k>(document, body)?),)*
            })
        }
    };
}
for_each_kind!(body);

/// Splits the input into parsed documents; `Null` marks an empty document.
fn documents(input: &str) -> Result<Vec<Value>> {
    let syntax = |e: &dyn std::fmt::Display| Error::Syntax {
        reason: e.to_string(),
    };
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for v in serde_json::Deserializer::from_str(trimmed).into_iter::<Value>() {
            match v.map_err(|e| syntax(&e))? {
                Value::Array(items) => docs.extend(items),
                v => docs.push(v),
            }
        }
        return Ok(docs);
    }
    serde_yaml_ng::Deserializer::from_str(input)
        .map(|doc| Value::deserialize(doc).map_err(|e| syntax(&e)))
        .collect()
}

fn decode_value(document: usize, value: Value, out: &mut Vec<v1::Object>) -> Result<()> {
    let mut map = match strip_nulls(value) {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(Error::Decode {
                document,
                path: ".".into(),
                reason: format!(
                    "expected a mapping with apiVersion and kind, found {}",
                    type_name(&other)
                ),
            })
        }
    };
    let kind = take_string(document, &mut map, "kind")?;
    let api_version = take_string(document, &mut map, "apiVersion")?;
    if kind == LIST_KIND {
        return decode_list(document, map, out);
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or(Error::UnknownKind { kind })?;
    if api_version != kind.api_version() {
        return Err(Error::ApiVersion {
            kind: kind.as_str().into(),
            expected: kind.api_version().into(),
            found: api_version,
        });
    }
    out.push(typed_object(document, kind, Value::Object(map))?);
    Ok(())
}

fn decode_list(
    document: usize,
    mut map: Map<String, Value>,
    out: &mut Vec<v1::Object>,
) -> Result<()> {
    let items = match map.remove("items") {
        Some(Value::Array(items)) => items,
        None => Vec::new(),
        Some(other) => {
            return Err(Error::Decode {
                document,
                path: "items".into(),
                reason: format!("expected a list, found {}", type_name(&other)),
            })
        }
    };
    // A List has no other meaningful fields; metadata (resourceVersion) is ignored.
    for item in items {
        decode_value(document, item, out)?;
    }
    Ok(())
}

fn typed<T: DeserializeOwned>(document: usize, body: Value) -> Result<T> {
    serde_path_to_error::deserialize(body).map_err(|e| Error::Decode {
        document,
        path: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

fn take_string(document: usize, map: &mut Map<String, Value>, key: &str) -> Result<String> {
    match map.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::String(_)) => Err(Error::Decode {
            document,
            path: key.into(),
            reason: "required".into(),
        }),
        Some(other) => Err(Error::Decode {
            document,
            path: key.into(),
            reason: format!("expected a string, found {}", type_name(&other)),
        }),
    }
}

/// Kubernetes treats `field: null` as unset (`creationTimestamp: null` is common in
/// kubectl output), so nulls are dropped before typed decoding.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        v => v,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
