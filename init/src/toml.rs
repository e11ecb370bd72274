//! `services.toml` as a tree of values that remember their line, so every
//! later check (unknown key, missing command, cycle) can point at it.
//!
//! Parsed by the `toml` crate's serde-free parser (`DeTable`, features
//! `std` + `parse` only) and mapped onto this module's small types. The
//! crate bounds nesting (80 levels), so no file, however hostile, can
//! overflow PID 1's stack; the workspace must never turn on its
//! `unbounded` feature. Why a crate and not our own reader, and what it
//! costs: docs/dependencies.md.

use std::fmt;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

/// A value and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Item>),
    Table(Table),
}

impl Value {
    /// The TOML type name, for "expected a string, found an integer".
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Str(_) => "a string",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::Bool(_) => "a boolean",
            Self::Array(_) => "an array",
            Self::Table(_) => "a table",
        }
    }
}

/// Keys in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub entries: Vec<(String, Item)>,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A syntax error and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// Parses a whole document into its root table.
pub fn parse(text: &str) -> Result<Table, Error> {
    let lines = Lines::new(text);
    let root = DeTable::parse(text).map_err(|e| syntax_error(text, &lines, &e))?;
    table(root.get_ref(), &lines)
}

/// The crate's message, its line, and the text it points at when that is
/// short (a duplicate key's message does not name the key).
fn syntax_error(text: &str, lines: &Lines, e: &toml::de::Error) -> Error {
    let msg = e.message();
    let Some(span) = e.span() else {
        return Error {
            line: line_of_spanless(text, lines, msg),
            msg: msg.to_string(),
        };
    };
    let msg = match text.get(span.clone()) {
        Some(at) if !at.is_empty() && at.len() <= 40 && !at.contains('\n') => {
            format!("{msg} (at `{at}`)")
        }
        _ => msg.to_string(),
    };
    Error {
        line: lines.line(span.start),
        msg,
    }
}

/// A few errors come without a position (a key of too many dotted parts):
/// the line is the first one whose prefix of the file already fails so.
/// Found by bisection, so a long file costs a handful of parses.
fn line_of_spanless(text: &str, lines: &Lines, msg: &str) -> usize {
    let fails = |n: usize| {
        let end = lines.0.get(n).map_or(text.len(), |&start| start);
        DeTable::parse_recoverable(&text[..end])
            .1
            .iter()
            .any(|e| e.span().is_none() && e.message() == msg)
    };
    // The smallest n in 1..=count whose first n lines fail (the whole file does).
    let (mut lo, mut hi) = (1, lines.0.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

// The recursion goes through table(), value() and array() only, with
// plain loops and the scalars in a function of their own, so its frames
// stay small even in a debug build (the deepest document the crate accepts
// nests about 240 levels: header, dotted key and value each near 80).
fn table(t: &DeTable<'_>, lines: &Lines) -> Result<Table, Error> {
    let mut entries = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        let at = k.span().start;
        let item = Item {
            line: lines.line(at),
            value: value(v, lines)?,
        };
        entries.push((at, k.get_ref().to_string(), item));
    }
    // The crate's map is sorted by key; the keys' offsets give file order
    // back, which is the order errors are reported in.
    entries.sort_by_key(|(at, _, _)| *at);
    Ok(Table {
        entries: entries.into_iter().map(|(_, k, i)| (k, i)).collect(),
    })
}

fn value(v: &Spanned<DeValue<'_>>, lines: &Lines) -> Result<Value, Error> {
    match v.get_ref() {
        DeValue::Table(t) => table(t, lines).map(Value::Table),
        DeValue::Array(a) => array(a, lines).map(Value::Array),
        other => scalar(other, lines.line(v.span().start)),
    }
}

fn array(a: &DeArray<'_>, lines: &Lines) -> Result<Vec<Item>, Error> {
    let mut items = Vec::with_capacity(a.len());
    for v in a.iter() {
        items.push(Item {
            line: lines.line(v.span().start),
            value: value(v, lines)?,
        });
    }
    Ok(items)
}

fn scalar(v: &DeValue<'_>, line: usize) -> Result<Value, Error> {
    let bad = |msg: &str| Error {
        line,
        msg: msg.to_string(),
    };
    Ok(match v {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => Value::Int(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| bad("integer out of range (at most 64 bits)"))?,
        ),
        DeValue::Float(f) => Value::Float(f.as_str().parse().map_err(|_| bad("invalid float"))?),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(_) => return Err(bad("dates and times are not used in this file")),
        DeValue::Array(_) | DeValue::Table(_) => unreachable!("value() handles these"),
    })
}

/// Byte offset to 1-based line.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines(starts)
    }

    fn line(&self, at: usize) -> usize {
        self.0.partition_point(|&start| start <= at)
    }
}

#[cfg(test)]
mod tests;
