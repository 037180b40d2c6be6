//! Kafka records' JSON straight into the columns of an `EventBlock` (schemas/block.py).
//!
//! A `Decoder` is built once per event kind from the contract's field specs (`schemas.block.SPECS`, derived
//! from the msgspec structs), so the contract is stated once, in Python. `decode` parses a batch of records and
//! appends every record it can prove valid to the columns; it never explains a refusal. A refused record goes
//! to msgspec, which either gives its error naming the field or, for a valid form this decoder does not take
//! (a timestamp with a space for `T`, a duplicate key, ...), decodes it. So the rule is: what this accepts,
//! msgspec accepts with the same values; a test holds the two to that on generated and hostile input.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// FxHash (rustc's): fast and unkeyed. Only for the field-name index, a fixed table no record can add to, so
/// colliding names cost a record a few comparisons at most; the per-batch string caches, which records do fill,
/// keep std's keyed SipHash (a flood of colliding values cannot make a batch quadratic).
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut b = bytes;
        while b.len() >= 8 {
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b[..8].try_into().unwrap())).wrapping_mul(K);
            b = &b[8..];
        }
        for &x in b {
            h = (h.rotate_left(5) ^ x as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

#[derive(Clone)]
enum Ty {
    Str { opt: bool, default: bool },
    Enum { opt: bool, values: Vec<String> },
    Int { opt: bool, lo: i64, hi: i64 },
    Float { lo: f64 },
    Bool { opt: bool },
    Strs,
    Ts,
}

struct Field {
    name: String,
    ty: Ty,
    lo: usize, // string length bounds (characters), for strings and list items
    hi: usize,
    // values repeat (names, routes, scope lists): one Python object per distinct value per batch, and a code per
    // event (its value's index among the batch's distinct values, in order of first appearance; -1 where absent)
    cache: bool,
}

/// One JSON value as the decoder needs it (strings borrowed from the record when unescaped).
enum Val<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Big, // an integer outside i64
    Float(f64),
    Bool(bool),
    Strs(Vec<Cow<'a, str>>),
}

#[derive(Debug)]
struct Reject;

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("left to msgspec")
    }
}

impl std::error::Error for Reject {}

impl de::Error for Reject {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Reject
    }
}

struct ValVisitor {
    list_max: usize,
}

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON scalar or a list of strings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(i64::try_from(v).map(Val::Int).unwrap_or(Val::Big))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(Val::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element_seed(StrSeed)? {
            if out.len() == self.list_max {
                return Err(de::Error::custom(Reject));
            }
            out.push(s);
        }
        Ok(Val::Strs(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Val<'de>, A::Error> {
        Err(de::Error::custom(Reject))
    }
}

struct ValSeed {
    list_max: usize,
}

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Val<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(ValVisitor { list_max: self.list_max })
    }
}

/// A string, borrowed when it has no escapes; anything else is refused.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// One record's fields, by index in the spec (`None`: absent).
struct RecordSeed<'s> {
    dec: &'s Decoder,
    // the field index each key position had in the records before (usize::MAX: none), since a producer writes
    // its keys in one order: a key is compared with that field's name first, and looked up only when it differs
    order: &'s mut Vec<usize>,
}

impl<'de, 's> DeserializeSeed<'de> for RecordSeed<'s> {
    type Value = Vec<Option<Val<'de>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for RecordSeed<'s> {
    type Value = Vec<Option<Val<'de>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dec = self.dec;
        let mut slots: Vec<Option<Val<'de>>> = Vec::with_capacity(dec.fields.len());
        slots.resize_with(dec.fields.len(), || None);
        let mut kind_seen = false;
        let mut pos = 0;
        while let Some(key) = map.next_key_seed(StrSeed)? {
            pos += 1;
            if key == "kind" {
                let v = map.next_value_seed(StrSeed)?;
                if kind_seen || v != dec.kind {
                    return Err(de::Error::custom(Reject)); // a duplicate, or another kind: msgspec says which
                }
                kind_seen = true;
                continue;
            }
            let hint = self.order.get(pos).copied().unwrap_or(usize::MAX);
            let found = match dec.fields.get(hint) {
                Some(f) if f.name == key.as_ref() => Some(hint),
                _ => {
                    let found = dec.index.get(key.as_ref()).copied();
                    if pos < self.order.len() {
                        self.order[pos] = found.unwrap_or(usize::MAX);
                    } else if pos <= 2 * dec.fields.len() {
                        self.order.resize(pos, usize::MAX);
                        self.order.push(found.unwrap_or(usize::MAX));
                    }
                    found
                }
            };
            if let Some(i) = found {
                if slots[i].is_some() {
                    return Err(de::Error::custom(Reject)); // a duplicate key
                }
                slots[i] = Some(map.next_value_seed(ValSeed { list_max: dec.list_max })?);
            } else {
                map.next_value::<IgnoredAny>()?; // unknown fields are tolerated (forward compatibility)
            }
        }
        if !kind_seen {
            return Err(de::Error::custom(Reject));
        }
        Ok(slots)
    }
}

fn chars_within(s: &str, lo: usize, hi: usize) -> bool {
    let n = s.len();
    if n <= hi && n >= lo.saturating_mul(4) {
        return true; // a character is 1 to 4 bytes
    }
    let c = s.chars().count();
    c >= lo && c <= hi
}

fn two(b: &[u8], i: usize) -> Option<u32> {
    let (a, c) = (b[i], b[i + 1]);
    if a.is_ascii_digit() && c.is_ascii_digit() {
        Some(((a - b'0') * 10 + (c - b'0')) as u32)
    } else {
        None
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

const MIN_US: i64 = -62135596800 * 1_000_000; // 0001-01-01T00:00:00Z
const MAX_US: i64 = 253402300799 * 1_000_000 + 999_999; // 9999-12-31T23:59:59.999999Z

/// RFC 3339 with an offset: YYYY-MM-DD(T|t)HH:MM:SS[.1-9 digits](Z|z|+HH:MM|-HH:MM), as epoch microseconds
/// (fractions past microseconds rounded half up, as msgspec does). Other forms are left to msgspec.
fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't') || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = two(b, 0)? * 100 + two(b, 2)?;
    let (month, day, hour, minute, second) = (two(b, 5)?, two(b, 8)?, two(b, 11)?, two(b, 14)?, two(b, 17)?);
    if year == 0 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
    if day == 0 || day > dim {
        return None;
    }
    let mut i = 19;
    let mut us: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for k in 0..6 {
            us = us * 10 + if k < n { (b[start + k] - b'0') as i64 } else { 0 };
        }
        if n > 6 && b[start + 6] >= b'5' {
            us += 1;
        }
    }
    let offset_min: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (two(b, i + 1)?, two(b, i + 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = (oh * 60 + om) as i64;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86400 + (hour * 3600 + minute * 60 + second) as i64 - offset_min * 60;
    let total = secs * 1_000_000 + us;
    if !(MIN_US..=MAX_US).contains(&total) {
        return None; // outside what a Python datetime holds in UTC
    }
    Some(total)
}

enum Col {
    Obj(Vec<PyObject>),
    I8(Vec<i8>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bool(Vec<u8>),
}

/// Check one record's slots against the spec, without building anything (a refused record adds nothing).
fn valid(dec: &Decoder, slots: &[Option<Val>]) -> bool {
    for (f, slot) in dec.fields.iter().zip(slots) {
        let ok = match (&f.ty, slot) {
            (Ty::Str { opt, default }, None) => *opt || *default,
            (Ty::Str { opt, .. }, Some(Val::Null)) => *opt,
            (Ty::Str { .. }, Some(Val::Str(s))) => chars_within(s, f.lo, f.hi),
            (Ty::Enum { opt, .. }, None | Some(Val::Null)) => *opt,
            (Ty::Enum { values, .. }, Some(Val::Str(s))) => values.iter().any(|v| v == s),
            (Ty::Int { opt, .. }, None | Some(Val::Null)) => *opt,
            (Ty::Int { lo, hi, .. }, Some(Val::Int(v))) => v >= lo && v <= hi,
            (Ty::Float { .. }, None | Some(Val::Null)) => true,
            (Ty::Float { lo }, Some(Val::Int(v))) => (*v as f64) >= *lo,
            (Ty::Float { lo }, Some(Val::Float(v))) => v.is_finite() && v >= lo,
            (Ty::Bool { opt }, None | Some(Val::Null)) => *opt,
            (Ty::Bool { .. }, Some(Val::Bool(_))) => true,
            (Ty::Strs, None | Some(Val::Null)) => true,
            (Ty::Strs, Some(Val::Strs(items))) => items.iter().all(|s| chars_within(s, f.lo, f.hi)),
            (Ty::Ts, Some(Val::Str(Cow::Borrowed(s)))) => parse_ts(s).is_some(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[pyclass(module = "spyglass_native")]
struct Decoder {
    kind: String,
    fields: Vec<Field>,
    index: FxMap<String, usize>,
    max_bytes: usize,
    list_max: usize,
}

#[pymethods]
impl Decoder {
    /// `specs`: [(name, type, lo, hi, enum values)] as `schemas.block.FieldSpec` states them.
    #[new]
    fn new(kind: String, specs: Vec<(String, String, Option<f64>, Option<i64>, Vec<String>)>, max_bytes: usize,
           list_max: usize) -> PyResult<Self> {
        let mut fields = Vec::new();
        for (name, t, lo, hi, values) in specs {
            let (slo, shi) = (lo.unwrap_or(0.0) as usize, hi.map(|h| h as usize).unwrap_or(usize::MAX));
            let ty = match t.as_str() {
                "str" => Ty::Str { opt: false, default: false },
                "ostr" => Ty::Str { opt: true, default: false },
                "dstr" => Ty::Str { opt: false, default: true },
                "enum" => Ty::Enum { opt: false, values },
                "oenum" => Ty::Enum { opt: true, values },
                "int" | "oint" => Ty::Int {
                    opt: t == "oint",
                    lo: lo.map(|x| x as i64).unwrap_or(i64::MIN),
                    hi: hi.unwrap_or(i64::MAX),
                },
                "ofloat" => Ty::Float { lo: lo.unwrap_or(f64::NEG_INFINITY) },
                "bool" => Ty::Bool { opt: false },
                "obool" => Ty::Bool { opt: true },
                "strs" => Ty::Strs,
                "ts" => Ty::Ts,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!("{name}: unknown column type {other}")))
                }
            };
            // lists are always factorized (their column is built that way); strings all but the event ids
            let cache = matches!(ty, Ty::Strs) || !matches!(name.as_str(), "event_id" | "parent_event_id");
            fields.push(Field { name, ty, lo: slo, hi: shi, cache });
        }
        let index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        Ok(Decoder { kind, fields, index, max_bytes, list_max })
    }

    /// Decode `values` (bytes or None): ({field: column}, {field: (codes, distinct values)}, indices decoded,
    /// indices left to msgspec). String columns are lists; the others are bytes of little-endian
    /// int8/int64/float64/bool values. Every string field but the event ids, and every list of strings, is also
    /// given factorized: its distinct values in order of first appearance, and each event's index among them as
    /// little-endian int32 bytes (-1 where absent; a list is never absent, it is then ()), so the engine interns
    /// each distinct value once, not each event's.
    fn decode<'py>(&self, py: Python<'py>, values: Vec<Option<Bound<'py, PyBytes>>>, tenant: &str)
                   -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, Vec<usize>, Vec<usize>)> {
        let n = values.len();
        let mut cols: Vec<Col> = self.fields.iter().map(|f| match f.ty {
            Ty::Str { .. } | Ty::Strs => Col::Obj(Vec::with_capacity(n)),
            Ty::Enum { .. } => Col::I8(Vec::with_capacity(n)),
            Ty::Int { .. } | Ty::Ts => Col::I64(Vec::with_capacity(n)),
            Ty::Float { .. } => Col::F64(Vec::with_capacity(n)),
            Ty::Bool { .. } => Col::Bool(Vec::with_capacity(n)),
        }).collect();
        // per cached field: value -> code, the distinct values (Python strings) by code, each event's code
        let mut caches: Vec<HashMap<String, i32>> = self.fields.iter().map(|_| HashMap::new()).collect();
        let mut distinct: Vec<Vec<PyObject>> = self.fields.iter().map(|_| Vec::new()).collect();
        let mut codes: Vec<Vec<i32>> = self.fields.iter()
            .map(|f| if f.cache { Vec::with_capacity(n) } else { Vec::new() })
            .collect();
        let (mut ok, mut rest) = (Vec::with_capacity(n), Vec::new());
        let mut order: Vec<usize> = Vec::new();
        let mut key = String::new(); // a list's cache key
        let empty_tuple: PyObject = PyTuple::empty_bound(py).into_any().unbind();
        for (i, v) in values.iter().enumerate() {
            let raw = match v {
                Some(raw) => raw,
                None => {
                    rest.push(i);
                    continue;
                }
            };
            let bytes = raw.as_bytes();
            // UTF-8 checked over the whole record (the parser would not look inside fields it skips)
            let text = match (bytes.len() <= self.max_bytes).then(|| std::str::from_utf8(bytes)) {
                Some(Ok(t)) => t,
                _ => {
                    rest.push(i);
                    continue;
                }
            };
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed = RecordSeed { dec: self, order: &mut order }.deserialize(&mut de)
                .and_then(|s| de.end().map(|_| s));
            let slots = match parsed {
                Ok(s) if valid(self, &s) => s,
                _ => {
                    rest.push(i);
                    continue;
                }
            };
            // the slots are read in place: moving each (a 32-byte enum) out of the vector cost about a fifth of
            // this function's time (perf), in a store the next load could not forward from
            for (j, (f, slot)) in self.fields.iter().zip(slots.iter()).enumerate() {
                match (&mut cols[j], &f.ty, slot) {
                    (Col::Obj(c), Ty::Str { default, .. }, slot) if f.cache => {
                        let s: Option<&str> = match slot {
                            Some(Val::Str(s)) => Some(s),
                            None if *default => Some(if f.name == "tenant" { tenant } else { "" }),
                            _ => None,
                        };
                        match s {
                            Some(s) => {
                                let code = match caches[j].get(s) {
                                    Some(&k) => k,
                                    None => {
                                        let k = distinct[j].len() as i32;
                                        distinct[j].push(PyString::new_bound(py, s).into_any().unbind());
                                        caches[j].insert(s.to_owned(), k);
                                        k
                                    }
                                };
                                c.push(distinct[j][code as usize].clone_ref(py));
                                codes[j].push(code);
                            }
                            None => {
                                c.push(py.None());
                                codes[j].push(-1);
                            }
                        }
                    }
                    (Col::Obj(c), Ty::Str { .. }, Some(Val::Str(s))) => c.push(PyString::new_bound(py, s).into_any().unbind()),
                    (Col::Obj(c), Ty::Str { default: true, .. }, None) => {
                        c.push(PyString::new_bound(py, if f.name == "tenant" { tenant } else { "" }).into_any().unbind())
                    }
                    (Col::Obj(c), Ty::Str { .. }, _) => c.push(py.None()),
                    (Col::Obj(c), Ty::Strs, slot) => {
                        // lists repeat too (a key's granted scopes): one tuple per distinct list, keyed by its
                        // items each after its byte length (unambiguous); absent, null and [] are all ()
                        let items: &[Cow<str>] = match slot {
                            Some(Val::Strs(items)) => items,
                            _ => &[],
                        };
                        key.clear();
                        for s in items {
                            let _ = write!(key, "{}:{}", s.len(), s); // writing to a String cannot fail
                        }
                        let code = match caches[j].get(key.as_str()) {
                            Some(&k) => k,
                            None => {
                                let k = distinct[j].len() as i32;
                                distinct[j].push(if items.is_empty() {
                                    empty_tuple.clone_ref(py)
                                } else {
                                    let strs: Vec<Bound<PyString>> =
                                        items.iter().map(|s| PyString::new_bound(py, s)).collect();
                                    PyTuple::new_bound(py, strs).into_any().unbind()
                                });
                                caches[j].insert(key.clone(), k);
                                k
                            }
                        };
                        c.push(distinct[j][code as usize].clone_ref(py));
                        codes[j].push(code);
                    }
                    (Col::Obj(c), _, _) => c.push(py.None()), // no other type has an object column
                    (Col::I8(c), Ty::Enum { values, .. }, Some(Val::Str(s))) => {
                        c.push(values.iter().position(|v| v == s).unwrap_or(0) as i8)
                    }
                    (Col::I8(c), _, _) => c.push(-1),
                    (Col::I64(c), Ty::Ts, Some(Val::Str(s))) => c.push(parse_ts(s).unwrap_or(0)),
                    (Col::I64(c), _, Some(Val::Int(x))) => c.push(*x),
                    (Col::I64(c), _, _) => c.push(0),
                    (Col::F64(c), _, Some(Val::Int(x))) => c.push(*x as f64),
                    (Col::F64(c), _, Some(Val::Float(x))) => c.push(*x),
                    (Col::F64(c), _, _) => c.push(f64::NAN),
                    (Col::Bool(c), _, Some(Val::Bool(x))) => c.push(*x as u8),
                    (Col::Bool(c), _, _) => c.push(0),
                }
            }
            ok.push(i);
        }
        let out = PyDict::new_bound(py);
        let factors = PyDict::new_bound(py);
        for (((f, col), d), k) in self.fields.iter().zip(cols).zip(distinct).zip(codes) {
            let v: PyObject = match col {
                Col::Obj(c) => PyList::new_bound(py, c).into_any().unbind(),
                Col::I8(c) => PyBytes::new_bound(py, &c.iter().map(|x| *x as u8).collect::<Vec<u8>>()).into_any().unbind(),
                Col::I64(c) => PyBytes::new_bound(py, &c.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
                    .into_any().unbind(),
                Col::F64(c) => PyBytes::new_bound(py, &c.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
                    .into_any().unbind(),
                Col::Bool(c) => PyBytes::new_bound(py, &c).into_any().unbind(),
            };
            out.set_item(&f.name, v)?;
            if f.cache && matches!(f.ty, Ty::Str { .. } | Ty::Strs) {
                let kb = PyBytes::new_bound(py, &k.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
                factors.set_item(&f.name, (kb, PyList::new_bound(py, d)))?;
            }
        }
        Ok((out, factors, ok, rest))
    }
}

/// `items` (str or bytes) as a ClickHouse Native-format `String` column: each item's UTF-8 bytes after
/// their length as an unsigned LEB128 varint, as clickhouse-driver writes them, without a Python object
/// per item. A str that is not valid UTF-8 (a lone surrogate) or an item of another type is refused, naming it.
#[pyfunction]
fn pack_strings<'py>(py: Python<'py>, items: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyBytes>> {
    let held: Vec<Bound<'py, PyAny>> = items.iter().collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(held.len());
    for (i, item) in held.iter().enumerate() {
        if let Ok(s) = item.downcast::<PyString>() {
            parts.push(s.to_str().map_err(|e| {
                pyo3::exceptions::PyValueError::new_err(format!("item {i}: not encodable as UTF-8: {e}"))
            })?.as_bytes());
        } else if let Ok(b) = item.downcast::<PyBytes>() {
            parts.push(b.as_bytes());
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "item {i}: expected str or bytes, got {}", item.get_type().name()?)));
        }
    }
    let varint_len = |n: usize| (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize;
    let total: usize = parts.iter().map(|p| varint_len(p.len()) + p.len()).sum();
    PyBytes::new_bound_with(py, total, |out| {
        let mut at = 0;
        for p in &parts {
            let mut n = p.len();
            while n >= 0x80 {
                out[at] = (n as u8 & 0x7f) | 0x80;
                n >>= 7;
                at += 1;
            }
            out[at] = n as u8;
            at += 1;
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok(())
    })
}

#[pymodule]
fn spyglass_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Decoder>()?;
    m.add_function(wrap_pyfunction!(pack_strings, m)?)?;
    Ok(())
}
