//! JSON/YAML shapes that the generated serde derives cannot express: [`v1::IntOrString`]
//! as a bare number or string, and byte maps (`Secret.data`, `ConfigMap.binaryData`) as
//! base64 strings. Also the arithmetic Kubernetes does on int-or-percent values. No
//! validation of what the values mean lives here.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::v1::{self, int_or_string::Value};

impl v1::IntOrString {
    /// The integer form, e.g. a port number or a count.
    pub fn int(i: i32) -> Self {
        Self {
            value: Some(Value::IntVal(i)),
        }
    }

    /// The string form, e.g. a port name or a percentage such as `"25%"`.
    pub fn string(s: impl Into<String>) -> Self {
        Self {
            value: Some(Value::StrVal(s.into())),
        }
    }

    /// The integer, if this is the integer form.
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Some(Value::IntVal(i)) => Some(i),
            _ => None,
        }
    }

    /// The string, if this is the string form.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(Value::StrVal(s)) => Some(s),
            _ => None,
        }
    }

    /// The percentage of a `"N%"` string, `None` for anything else.
    pub fn percent(&self) -> Option<i32> {
        self.as_str()?.strip_suffix('%')?.parse().ok()
    }

    /// Kubernetes' `GetScaledValueFromIntOrPercent`: an integer as is, a percentage of
    /// `total` rounded up or down; `None` for a string that is not a percentage.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Option<i32> {
        if let Some(i) = self.as_int() {
            return Some(i);
        }
        let pct = i64::from(self.percent()?);
        let product = pct * i64::from(total);
        let scaled = if round_up {
            product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
        } else {
            product.div_euclid(100)
        };
        i32::try_from(scaled).ok()
    }
}

impl fmt::Display for v1::IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(Value::IntVal(i)) => write!(f, "{i}"),
            Some(Value::StrVal(s)) => f.write_str(s),
            None => f.write_str("0"),
        }
    }
}

impl Serialize for v1::IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Some(Value::StrVal(v)) => s.serialize_str(v),
            Some(Value::IntVal(i)) => s.serialize_i32(*i),
            // An unset oneof is the zero value of the integer form, as in Kubernetes.
            None => s.serialize_i32(0),
        }
    }
}

impl<'de> Deserialize<'de> for v1::IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = v1::IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(v1::IntOrString::int)
                    .map_err(|_| E::custom(format!("{v} does not fit in a 32-bit integer")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(v1::IntOrString::int)
                    .map_err(|_| E::custom(format!("{v} does not fit in a 32-bit integer")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(v1::IntOrString::string(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with)]` module for `map<string, bytes>` fields: values are standard base64
/// (padded) strings in YAML and JSON, raw bytes in protobuf.
pub mod base64_map {
    use super::*;

    /// Writes each value as base64.
    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        s.collect_map(map.iter().map(|(k, v)| (k, engine.encode(v))))
    }

    /// Reads base64 values; bad base64 is an error naming the key.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match engine.decode(v.trim()) {
                Ok(bytes) => Ok((k, bytes)),
                Err(e) => Err(de::Error::custom(format!(
                    "key {k:?}: value is not valid base64: {e}"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_string_is_a_bare_number_or_string() {
        let i: v1::IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(i.as_int(), Some(8080));
        let s: v1::IntOrString = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(s.as_str(), Some("http"));
        assert_eq!(serde_json::to_string(&i).unwrap(), "8080");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"http\"");
        assert!(serde_json::from_str::<v1::IntOrString>("3000000000").is_err());
        assert!(serde_json::from_str::<v1::IntOrString>("true").is_err());
        let y: v1::IntOrString = serde_yaml_ng::from_str("25%").unwrap();
        assert_eq!(y.percent(), Some(25));
    }

    #[test]
    fn percentages_scale_like_kubernetes() {
        let pct = v1::IntOrString::string("25%");
        assert_eq!(pct.scaled_value(10, true), Some(3));
        assert_eq!(pct.scaled_value(10, false), Some(2));
        assert_eq!(pct.scaled_value(4, true), Some(1));
        assert_eq!(pct.scaled_value(0, true), Some(0));
        assert_eq!(v1::IntOrString::int(2).scaled_value(10, true), Some(2));
        assert_eq!(v1::IntOrString::string("x").scaled_value(10, true), None);
        assert_eq!(v1::IntOrString::string("%").scaled_value(10, true), None);
    }
}
