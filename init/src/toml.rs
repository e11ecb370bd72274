//! A small TOML reader for `services.toml`: the subset a service file
//! needs, remembering the line of every key so that errors can point at it.
//!
//! Hand-written rather than the `toml` crate because that (with serde)
//! adds about 180 KiB to a 450 KiB PID 1, and because every later check
//! (unknown key, missing command, cycle) wants a line number.
//!
//! Supported: comments, `[table]` and `[a.b]` headers, bare and quoted
//! keys, basic and literal strings, integers, floats, booleans, arrays
//! (spanning lines, trailing comma) and inline tables. Refused with a
//! clear message: `[[arrays of tables]]`, dotted keys, multi-line strings
//! and dates. The unit tests cross-check accepted input against the
//! `toml` crate.

use std::fmt;

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
    /// Defined by a `[header]` (a second header for it is an error).
    explicit: bool,
    /// Written inline as `{ … }`, which TOML closes to later additions.
    inline: bool,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Item> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
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
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    let mut root = Table::default();
    // The path of the current [table]; empty for the root.
    let mut current: Vec<String> = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            None => return Ok(root),
            Some(b'\n') => p.bump(),
            Some(b'#') => p.skip_comment(),
            Some(b'[') => {
                let line = p.line;
                let path = p.header()?;
                open_table(&mut root, &path, line)?;
                current = path;
            }
            Some(_) => {
                let line = p.line;
                let key = p.key()?;
                p.skip_ws();
                if p.peek() == Some(b'.') {
                    return Err(p.err("dotted keys are not supported here; use a [table] header"));
                }
                p.expect(b'=', "'=' after the key")?;
                p.skip_ws();
                let value = p.value()?;
                p.end_of_line()?;
                let table = table_at(&mut root, &current);
                insert(table, key, Item { line, value }, line)?;
            }
        }
    }
}

fn insert(table: &mut Table, key: String, item: Item, line: usize) -> Result<(), Error> {
    if let Some(old) = table.get(&key) {
        return Err(Error {
            line,
            msg: format!("key '{key}' is defined twice (first on line {})", old.line),
        });
    }
    table.entries.push((key, item));
    Ok(())
}

/// Walks an already opened path (the current header).
fn table_at<'a>(root: &'a mut Table, path: &[String]) -> &'a mut Table {
    let mut t = root;
    for part in path {
        t = match t.get_mut(part) {
            Some(Item {
                value: Value::Table(inner),
                ..
            }) => inner,
            // open_table created every part as a table.
            _ => unreachable!("header path {path:?} was opened as tables"),
        };
    }
    t
}

/// Creates (or re-enters an implicitly created) table for a `[a.b]` header.
fn open_table(root: &mut Table, path: &[String], line: usize) -> Result<(), Error> {
    let mut t = root;
    for (i, part) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if t.get(part).is_none() {
            let new = Table::default();
            t.entries.push((
                part.clone(),
                Item {
                    line,
                    value: Value::Table(new),
                },
            ));
        }
        let item = t.get_mut(part).expect("just inserted");
        let first_line = item.line;
        let name = path[..=i].join(".");
        match &mut item.value {
            Value::Table(inner) if inner.inline => {
                return Err(Error {
                    line,
                    msg: format!(
                        "[{name}] was written inline on line {first_line} and cannot be extended"
                    ),
                })
            }
            Value::Table(inner) => {
                if last {
                    if inner.explicit {
                        return Err(Error {
                            line,
                            msg: format!(
                                "table [{name}] is defined twice (first on line {first_line})"
                            ),
                        });
                    }
                    inner.explicit = true;
                }
                t = inner;
            }
            other => {
                return Err(Error {
                    line,
                    msg: format!(
                        "[{name}]: '{part}' is already {} (line {first_line})",
                        other.type_name()
                    ),
                })
            }
        }
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error {
            line: self.line,
            msg: msg.into(),
        }
    }

    /// Spaces and tabs (and a CR before a newline).
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some(b'\n')) {
            self.pos += 1;
        }
    }

    /// Whitespace, newlines and comments (inside arrays).
    fn skip_all(&mut self) {
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'\n') => self.bump(),
                Some(b'#') => self.skip_comment(),
                _ => return,
            }
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), Error> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {}", self.found())))
        }
    }

    /// Describes the character at the cursor for an error message.
    fn found(&self) -> String {
        match self.text.get(self.pos..).and_then(|r| r.chars().next()) {
            None => "the end of the file".into(),
            Some('\n') => "the end of the line".into(),
            Some(c) => format!("'{c}'"),
        }
    }

    /// After a value or header: only a comment may follow on the line.
    fn end_of_line(&mut self) -> Result<(), Error> {
        self.skip_ws();
        match self.peek() {
            None | Some(b'\n') => Ok(()),
            Some(b'#') => {
                self.skip_comment();
                Ok(())
            }
            Some(_) => Err(self.err(format!(
                "unexpected {} after the value (one key = value per line)",
                self.found()
            ))),
        }
    }

    fn header(&mut self) -> Result<Vec<String>, Error> {
        self.bump(); // '['
        if self.peek() == Some(b'[') {
            return Err(self.err("[[arrays of tables]] are not supported here"));
        }
        let mut path = Vec::new();
        loop {
            self.skip_ws();
            path.push(self.key()?);
            self.skip_ws();
            match self.peek() {
                Some(b'.') => self.bump(),
                Some(b']') => {
                    self.bump();
                    break;
                }
                _ => {
                    return Err(self.err(format!(
                        "expected '.' or ']' in the table header, found {}",
                        self.found()
                    )))
                }
            }
        }
        self.end_of_line()?;
        Ok(path)
    }

    fn key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some(b'"') => self.basic_string(),
            Some(b'\'') => self.literal_string(),
            _ => {
                let start = self.pos;
                while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') = self.peek()
                {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(self.err(format!("expected a key, found {}", self.found())));
                }
                Ok(self.text[start..self.pos].to_string())
            }
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        match self.peek() {
            Some(b'"') => self.basic_string().map(Value::Str),
            Some(b'\'') => self.literal_string().map(Value::Str),
            Some(b'[') => self.array(),
            Some(b'{') => self.inline_table(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'+' | b'-' | b'0'..=b'9') => self.scalar(),
            _ => Err(self.err(format!("expected a value, found {}", self.found()))),
        }
    }

    fn basic_string(&mut self) -> Result<String, Error> {
        if self.s[self.pos..].starts_with(b"\"\"\"") {
            return Err(self.err("multi-line strings are not supported here"));
        }
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.text.get(self.pos..).and_then(|r| r.chars().next()) else {
                return Err(self.err("unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\n' => {
                    self.pos -= 1;
                    return Err(self.err("unterminated string (strings end on their line)"));
                }
                '\\' => {
                    let e = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => out.push(self.unicode(4)?),
                        b'U' => out.push(self.unicode(8)?),
                        _ => {
                            return Err(
                                self.err("unknown escape in string (use \\\\ for a backslash)")
                            )
                        }
                    }
                }
                c if c.is_control() && c != '\t' => {
                    return Err(self.err("control character in string (escape it)"))
                }
                c => out.push(c),
            }
        }
    }

    fn unicode(&mut self, digits: usize) -> Result<char, Error> {
        let hex = self
            .text
            .get(self.pos..self.pos + digits)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.err(format!("\\u escape needs {digits} hex digits")))?;
        self.pos += digits;
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.err("escape is not a Unicode scalar value"))
    }

    fn literal_string(&mut self) -> Result<String, Error> {
        if self.s[self.pos..].starts_with(b"'''") {
            return Err(self.err("multi-line strings are not supported here"));
        }
        self.bump();
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b'\'') => {
                    let s = self.text[start..self.pos].to_string();
                    self.bump();
                    return Ok(s);
                }
                None | Some(b'\n') => {
                    return Err(self.err("unterminated string (strings end on their line)"))
                }
                Some(b) if b < 0x20 && b != b'\t' || b == 0x7f => {
                    return Err(self.err("control character in string"))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn array(&mut self) -> Result<Value, Error> {
        let open = self.line;
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_all();
            match self.peek() {
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                None => {
                    return Err(Error {
                        line: open,
                        msg: "array is never closed with ']'".into(),
                    })
                }
                _ => {}
            }
            let line = self.line;
            let value = self.value()?;
            items.push(Item { line, value });
            self.skip_all();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b']') => {}
                None => {
                    return Err(Error {
                        line: open,
                        msg: "array is never closed with ']'".into(),
                    })
                }
                _ => {
                    return Err(self.err(format!(
                        "expected ',' or ']' in the array, found {}",
                        self.found()
                    )))
                }
            }
        }
    }

    fn inline_table(&mut self) -> Result<Value, Error> {
        self.bump();
        let mut table = Table {
            inline: true,
            ..Table::default()
        };
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Value::Table(table));
        }
        loop {
            self.skip_ws();
            let line = self.line;
            let key = self.key()?;
            self.skip_ws();
            self.expect(b'=', "'=' after the key")?;
            self.skip_ws();
            let value = self.value()?;
            insert(&mut table, key, Item { line, value }, line)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Table(table));
                }
                _ => {
                    return Err(self.err(format!(
                        "expected ',' or '}}' in the inline table (which must fit on one line), found {}",
                        self.found()
                    )))
                }
            }
        }
    }

    /// Booleans and numbers: read the whole token, then interpret it.
    fn scalar(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'+' | b'-' | b'.' | b':') =
            self.peek()
        {
            self.pos += 1;
        }
        let tok = &self.text[start..self.pos];
        match tok {
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        number(tok).ok_or_else(|| {
            let msg = if matches!(tok.trim_start_matches(['+', '-']), "inf" | "nan") {
                format!("'{tok}': inf and nan are not supported here")
            } else if tok.contains(':')
                || tok[1.min(tok.len())..].contains('-') && !tok.contains(['e', 'E'])
            {
                format!("'{tok}': dates and times are not supported here")
            } else {
                format!("'{tok}' is not a valid value (strings need quotes)")
            };
            Error {
                line: self.line,
                msg,
            }
        })
    }
}

/// TOML integers and floats (decimal; `0x`/`0o`/`0b` integers; `_`
/// between digits). `inf` and `nan` are refused: no setting wants them.
fn number(tok: &str) -> Option<Value> {
    let (sign, body) = match tok.as_bytes().first()? {
        b'+' => (1, &tok[1..]),
        b'-' => (-1, &tok[1..]),
        _ => (1, tok),
    };
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = body.strip_prefix(prefix) {
            if sign == -1 || tok.starts_with('+') {
                return None;
            }
            return i64::from_str_radix(&clean_digits(digits, radix)?, radix)
                .ok()
                .map(Value::Int);
        }
    }
    let is_float = body.contains(['.', 'e', 'E']);
    if !is_float {
        let digits = clean_digits(body, 10)?;
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        let v: i64 = format!("{}{digits}", if sign < 0 { "-" } else { "" })
            .parse()
            .ok()?;
        return Some(Value::Int(v));
    }
    // Float: int part, optional .frac, optional exponent; each digit run
    // non-empty and underscores only between digits.
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let int = clean_digits(int, 10)?;
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    let mut s = format!("{}{int}", if sign < 0 { "-" } else { "" });
    if let Some(f) = frac {
        s.push('.');
        s.push_str(&clean_digits(f, 10)?);
    }
    if let Some(e) = exp {
        let (esign, edigits) = match e.as_bytes().first()? {
            b'+' | b'-' => (&e[..1], &e[1..]),
            _ => ("", e),
        };
        s.push('e');
        s.push_str(esign);
        s.push_str(&clean_digits(edigits, 10)?);
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Value::Float)
}

/// Removes `_` separators, which TOML allows only between two digits.
fn clean_digits(s: &str, radix: u32) -> Option<String> {
    let b = s.as_bytes();
    if b.is_empty() || b[0] == b'_' || b[b.len() - 1] == b'_' || s.contains("__") {
        return None;
    }
    let out: String = s.chars().filter(|&c| c != '_').collect();
    out.chars().all(|c| c.is_digit(radix)).then_some(out)
}

#[cfg(test)]
mod tests;
