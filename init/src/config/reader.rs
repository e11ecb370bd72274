//! Reading typed values out of one services.toml table, collecting a
//! `ConfigError` (with the line) for every wrong one.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::ConfigError;
use crate::toml::{Table, Value};

/// Longest accepted time setting: a day (catches ms-for-seconds slips).
const MAX_SECONDS: f64 = 86_400.0;

/// Collects errors while reading values of one table.
pub(super) struct Reader<'a> {
    pub errors: &'a mut Vec<ConfigError>,
    /// `[worker.agent]` etc., prefixed to every message.
    pub place: String,
}

impl Reader<'_> {
    pub fn error(&mut self, line: usize, msg: impl fmt::Display) {
        self.errors.push(ConfigError {
            line,
            msg: format!("{}{msg}", self.place),
        });
    }

    pub fn check_keys(&mut self, table: &Table, known: &[&str]) {
        for (key, item) in &table.entries {
            if !known.contains(&key.as_str()) {
                self.error(
                    item.line,
                    format!("unknown key '{key}' (known keys: {})", known.join(", ")),
                );
            }
        }
    }

    pub fn string(&mut self, table: &Table, key: &str) -> Option<(usize, String)> {
        let item = table.get(key)?;
        match &item.value {
            Value::Str(s) => Some((item.line, s.clone())),
            other => {
                self.error(
                    item.line,
                    format!("{key} must be a string, not {}", other.type_name()),
                );
                None
            }
        }
    }

    pub fn seconds(&mut self, table: &Table, key: &str, default: Duration) -> Duration {
        let Some(item) = table.get(key) else {
            return default;
        };
        let secs = match item.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            ref other => {
                self.error(
                    item.line,
                    format!(
                        "{key} must be a number of seconds, not {}",
                        other.type_name()
                    ),
                );
                return default;
            }
        };
        if !(0.0..=MAX_SECONDS).contains(&secs) {
            self.error(
                item.line,
                format!("{key} = {secs} is outside 0..={MAX_SECONDS} seconds"),
            );
            return default;
        }
        Duration::from_secs_f64(secs)
    }

    pub fn int(
        &mut self,
        table: &Table,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<(usize, i64)> {
        let item = table.get(key)?;
        match item.value {
            Value::Int(i) if range.contains(&i) => Some((item.line, i)),
            Value::Int(i) => {
                self.error(
                    item.line,
                    format!("{key} = {i} is outside {}..={}", range.start(), range.end()),
                );
                None
            }
            ref other => {
                self.error(
                    item.line,
                    format!("{key} must be an integer, not {}", other.type_name()),
                );
                None
            }
        }
    }

    pub fn choice<T: Copy>(
        &mut self,
        table: &Table,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some((line, s)) = self.string(table, key) else {
            return default;
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(
                    line,
                    format!("{key} = \"{s}\" is not one of: {}", names.join(", ")),
                );
                default
            }
        }
    }

    pub fn strings(&mut self, table: &Table, key: &str) -> Vec<(usize, String)> {
        let Some(item) = table.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = &item.value else {
            self.error(
                item.line,
                format!(
                    "{key} must be an array of strings, not {}",
                    item.value.type_name()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in items {
            match &i.value {
                Value::Str(s) => out.push((i.line, s.clone())),
                other => self.error(
                    i.line,
                    format!(
                        "{key}: every entry must be a string, not {}",
                        other.type_name()
                    ),
                ),
            }
        }
        out
    }

    /// `user`/`group`: a number or a name from /etc/passwd or /etc/group.
    pub fn account(
        &mut self,
        table: &Table,
        key: &str,
        known: &HashMap<String, u32>,
    ) -> Option<u32> {
        let item = table.get(key)?;
        match &item.value {
            Value::Int(i) => match u32::try_from(*i) {
                Ok(id) => Some(id),
                Err(_) => {
                    self.error(item.line, format!("{key} = {i} is not a valid id"));
                    None
                }
            },
            Value::Str(name) if name == "root" => Some(0),
            Value::Str(name) => match known.get(name) {
                Some(id) => Some(*id),
                None => {
                    let file = if key == "user" {
                        "/etc/passwd"
                    } else {
                        "/etc/group"
                    };
                    self.error(
                        item.line,
                        format!("{key} '{name}' is not in {file} (give a number instead)"),
                    );
                    None
                }
            },
            other => {
                self.error(
                    item.line,
                    format!(
                        "{key} must be a name or a number, not {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }
}
