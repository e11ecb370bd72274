//! Log lines from the fleet client, filtered by a level the cloud can
//! change (shadow setting `log_level`). Lines go to stderr, which init
//! collects per service; tests capture them to check what was said.

use std::fmt;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub const NAMES: &'static str = "error, warn, info, debug";

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

type Sink = Box<dyn FnMut(&str) + Send>;

pub struct Log {
    pub level: Level,
    sink: Sink,
}

impl Log {
    pub fn stderr(level: Level) -> Log {
        Log {
            level,
            sink: Box::new(|line| eprintln!("{line}")),
        }
    }

    /// A log whose lines (at every level) are kept for a test to read.
    pub fn capture() -> (Log, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let log = Log {
            level: Level::Debug,
            sink: Box::new(move |line| {
                if let Ok(mut l) = kept.lock() {
                    l.push(line.to_string());
                }
                eprintln!("{line}");
            }),
        };
        (log, lines)
    }

    pub fn write(&mut self, level: Level, message: fmt::Arguments) {
        if level <= self.level {
            (self.sink)(&format!("fleet: {}: {message}", level.name()));
        }
    }

    pub fn error(&mut self, m: impl fmt::Display) {
        self.write(Level::Error, format_args!("{m}"));
    }
    pub fn warn(&mut self, m: impl fmt::Display) {
        self.write(Level::Warn, format_args!("{m}"));
    }
    pub fn info(&mut self, m: impl fmt::Display) {
        self.write(Level::Info, format_args!("{m}"));
    }
    pub fn debug(&mut self, m: impl fmt::Display) {
        self.write(Level::Debug, format_args!("{m}"));
    }
}
