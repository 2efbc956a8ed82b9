//! Numbers that may not be finite. JSON has no NaN or infinity, and serde_json writes them as
//! `null`, which a plain `f64` field then refuses to read: one diverged loss made a whole
//! results file unreadable. These serialize a finite number as itself and the others as the
//! strings `"NaN"`, `"inf"` and `"-inf"`; they read both, and `null` as NaN (what lines
//! written before the schema had a version hold where a value was not finite).
//!
//! Use with `#[serde(with = "randbench_schema::real")]` on an `f64`, or the submodules for
//! `Option<f64>` and `Vec<f32>`.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// The string a value that is not finite is written as.
pub fn label(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("NaN")
    } else if x == f64::INFINITY {
        Some("inf")
    } else if x == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

fn parse_label(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "inf" | "Infinity" | "+inf" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    match label(*x) {
        Some(l) => s.serialize_str(l),
        None => s.serialize_f64(*x),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(RealVisitor)
}

struct RealVisitor;

impl Visitor<'_> for RealVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, or \"NaN\", \"inf\" or \"-inf\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        parse_label(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }
}

/// One number of a vector, either way.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Real(f64);

impl Serialize for Real {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Real {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Real)
    }
}

/// `Option<f64>`: `None` is `null`, so a `null` reads as `None` here, never as NaN.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Real>::deserialize(d).map(|o| o.map(|r| r.0))
    }
}

/// `Vec<f32>`.
pub mod vec_f32 {
    use super::*;

    /// One f32, finite ones as themselves (widened to f64 they would print 0.1 as
    /// 0.10000000149011612).
    struct Real32(f32);

    impl Serialize for Real32 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match label(self.0 as f64) {
                Some(l) => s.serialize_str(l),
                None => s.serialize_f32(self.0),
            }
        }
    }

    pub fn serialize<S: Serializer>(xs: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(xs.len()))?;
        for x in xs {
            seq.serialize_element(&Real32(*x))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Vec::<Real>::deserialize(d).map(|v| v.into_iter().map(|r| r.0 as f32).collect())
    }
}

/// Whether two numbers are the same value, NaN equal to NaN: for comparing what was written
/// with what was read back.
pub fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Line {
        #[serde(with = "crate::real")]
        x: f64,
        #[serde(with = "crate::real::option")]
        o: Option<f64>,
        #[serde(with = "crate::real::vec_f32")]
        v: Vec<f32>,
    }

    #[test]
    fn non_finite_numbers_survive_json() {
        let l = Line { x: f64::NAN, o: Some(f64::NEG_INFINITY), v: vec![0.1, f32::INFINITY] };
        let text = serde_json::to_string(&l).unwrap();
        // An f32 prints as the shortest text that reads back as it, not as its f64 widening.
        assert_eq!(text, r#"{"x":"NaN","o":"-inf","v":[0.1,"inf"]}"#);
        let back: Line = serde_json::from_str(&text).unwrap();
        assert!(back.x.is_nan());
        assert_eq!(back.o, Some(f64::NEG_INFINITY));
        assert_eq!(back.v, vec![0.1, f32::INFINITY]);
    }

    #[test]
    fn null_reads_as_nan_where_a_number_must_be_and_as_none_where_it_may_be_missing() {
        let back: Line = serde_json::from_str(r#"{"x":null,"o":null,"v":[null, 2]}"#).unwrap();
        assert!(back.x.is_nan());
        assert_eq!(back.o, None);
        assert!(back.v[0].is_nan() && back.v[1] == 2.0);
        let bad = serde_json::from_str::<Line>(r#"{"x":"fast","o":null,"v":[]}"#).unwrap_err();
        assert!(bad.to_string().contains("a number, or \"NaN\""), "{bad}");
    }
}
