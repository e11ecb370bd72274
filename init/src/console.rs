//! The debug console's input side: splitting console bytes into lines and
//! lines into commands. Pure, so every odd input is unit-tested; running
//! the commands is `commands.rs` and `system.rs`.

use std::fmt;

use crate::shutdown::Kind;

/// Longest accepted command line. The tty's canonical mode already caps a
/// line at 4095 bytes; the cap here also covers a console in raw mode.
pub const MAX_LINE: usize = 4096;

/// A console line that could not be taken as a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    TooLong,
}

/// Accumulates console bytes and yields complete lines. Bounded: an
/// overlong line is dropped up to its newline and reported once.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    overflowed: bool,
}

impl LineReader {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, LineError>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.overflowed {
                    out.push(Err(LineError::TooLong));
                } else {
                    let mut line = std::mem::take(&mut self.buf);
                    // A terminal in raw mode or a Windows serial tool sends CRLF.
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    out.push(Ok(line));
                }
                self.buf.clear();
                self.overflowed = false;
            } else if self.buf.len() >= MAX_LINE {
                self.overflowed = true;
                self.buf.clear();
            } else if !self.overflowed {
                self.buf.push(b);
            }
        }
        out
    }
}

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Cat(String),
    Write { path: String, text: String },
    Append { path: String, text: String },
    Mkdir(String),
    Rm(String),
    Ls(String),
    Mounts,
    Status,
    Run { program: String, args: Vec<String> },
    Shutdown(Kind),
}

/// Why a line is not a command; shown as `keel: error: <this>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Unknown(String),
    Usage(&'static str),
    Quote,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(word) => write!(f, "unknown command '{word}' (try: {KNOWN})"),
            Self::Usage(usage) => write!(f, "usage: {usage}"),
            Self::Quote => write!(f, "unterminated quote"),
        }
    }
}

/// The commands, for the unknown-command error.
const KNOWN: &str =
    "cat, write, append, mkdir, rm, ls, mounts, status, run, reboot, poweroff, halt";

/// Splits off the first whitespace-separated word; the rest keeps its
/// inner spacing (for `write`'s text and `reboot`'s argument).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Shell-like words for `run`: whitespace separates, '…' is literal,
/// "…" and bare words honour backslash escapes. No globbing, no variables.
pub fn words(s: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(ParseError::Quote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(ParseError::Quote),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(ParseError::Quote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Longest unknown word echoed back in an error; a pasted 4 KiB blob
/// should not come back as a 4 KiB error line.
const MAX_ECHO: usize = 40;

fn shorten(word: &str) -> String {
    match word.char_indices().nth(MAX_ECHO) {
        Some((i, _)) => format!("{}...", &word[..i]),
        None => word.to_string(),
    }
}

/// Parses one line. `Ok(None)` for a blank line, which gets no reply.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let (word, rest) = split_word(line);
    let one_path = |usage| {
        let (path, extra) = split_word(rest);
        if path.is_empty() || !extra.is_empty() {
            Err(ParseError::Usage(usage))
        } else {
            Ok(path.to_string())
        }
    };
    let no_args = |usage, cmd| {
        if rest.is_empty() {
            Ok(Some(cmd))
        } else {
            Err(ParseError::Usage(usage))
        }
    };
    match word {
        "" => Ok(None),
        "cat" => Ok(Some(Command::Cat(one_path("cat PATH")?))),
        "ls" => {
            if rest.is_empty() {
                Ok(Some(Command::Ls("/".to_string())))
            } else {
                Ok(Some(Command::Ls(one_path("ls [PATH]")?)))
            }
        }
        "write" | "append" => {
            let (path, text) = split_word(rest);
            let (path, text) = (path.to_string(), text.to_string());
            match (word, path.is_empty()) {
                ("write", true) => Err(ParseError::Usage("write PATH TEXT...")),
                (_, true) => Err(ParseError::Usage("append PATH TEXT...")),
                ("write", false) => Ok(Some(Command::Write { path, text })),
                (_, false) => Ok(Some(Command::Append { path, text })),
            }
        }
        "mkdir" => Ok(Some(Command::Mkdir(one_path("mkdir PATH")?))),
        "rm" => Ok(Some(Command::Rm(one_path("rm PATH")?))),
        "mounts" => no_args("mounts", Command::Mounts),
        "status" => no_args("status", Command::Status),
        "run" => {
            let mut w = words(rest)?;
            if w.is_empty() {
                return Err(ParseError::Usage("run PROGRAM ARGS..."));
            }
            let program = w.remove(0);
            Ok(Some(Command::Run { program, args: w }))
        }
        "reboot" => {
            let arg = (!rest.is_empty()).then(|| rest.trim_end().to_string());
            Ok(Some(Command::Shutdown(Kind::Reboot(arg))))
        }
        "poweroff" => no_args("poweroff", Command::Shutdown(Kind::PowerOff)),
        "halt" => no_args("halt", Command::Shutdown(Kind::Halt)),
        other => Err(ParseError::Unknown(shorten(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line).unwrap().unwrap()
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        let mut r = LineReader::default();
        assert!(r.feed(b"ca").is_empty());
        let lines = r.feed(b"t /a\r\nls\n\nmou");
        assert_eq!(
            lines,
            vec![Ok(b"cat /a".to_vec()), Ok(b"ls".to_vec()), Ok(Vec::new())]
        );
        assert_eq!(r.feed(b"nts\n"), vec![Ok(b"mounts".to_vec())]);
    }

    #[test]
    fn overlong_line_is_one_error_then_reading_recovers() {
        let mut r = LineReader::default();
        let long = vec![b'x'; MAX_LINE * 3];
        assert!(r.feed(&long).is_empty());
        assert!(r.buf.len() <= MAX_LINE, "memory stays bounded");
        assert_eq!(
            r.feed(b"yyy\nls\n"),
            vec![Err(LineError::TooLong), Ok(b"ls".to_vec())]
        );
        // Exactly MAX_LINE bytes is still accepted.
        let exact = vec![b'z'; MAX_LINE];
        let mut r = LineReader::default();
        r.feed(&exact);
        assert_eq!(r.feed(b"\n"), vec![Ok(exact)]);
    }

    #[test]
    fn parses_file_commands() {
        assert_eq!(
            ok("cat /etc/keel/release"),
            Command::Cat("/etc/keel/release".into())
        );
        assert_eq!(ok("  ls   /data  "), Command::Ls("/data".into()));
        assert_eq!(ok("ls"), Command::Ls("/".into()));
        assert_eq!(ok("mounts"), Command::Mounts);
        assert_eq!(
            ok("write /data/x hello   world "),
            Command::Write {
                path: "/data/x".into(),
                text: "hello   world ".into()
            }
        );
        assert_eq!(
            ok("write /data/empty"),
            Command::Write {
                path: "/data/empty".into(),
                text: String::new()
            }
        );
    }

    #[test]
    fn parses_append_mkdir_rm_status() {
        assert_eq!(
            ok("append /data/keel/s.toml children = [\"a\", \"b\"]"),
            Command::Append {
                path: "/data/keel/s.toml".into(),
                text: "children = [\"a\", \"b\"]".into()
            }
        );
        assert_eq!(
            ok("append /x"),
            Command::Append {
                path: "/x".into(),
                text: String::new()
            }
        );
        assert_eq!(ok("mkdir /data/keel"), Command::Mkdir("/data/keel".into()));
        assert_eq!(
            ok("rm /data/keel/s.toml"),
            Command::Rm("/data/keel/s.toml".into())
        );
        assert_eq!(ok("status"), Command::Status);
    }

    #[test]
    fn parses_run_with_quotes() {
        assert_eq!(
            ok(r#"run /bin/sh -c "echo \"hi\" there" 'a b' c\ d"#),
            Command::Run {
                program: "/bin/sh".into(),
                args: vec![
                    "-c".into(),
                    "echo \"hi\" there".into(),
                    "a b".into(),
                    "c d".into()
                ]
            }
        );
        assert_eq!(
            ok("run /bin/true ''"),
            Command::Run {
                program: "/bin/true".into(),
                args: vec![String::new()]
            }
        );
        assert_eq!(parse("run 'oops"), Err(ParseError::Quote));
        assert_eq!(parse("run \"oops\\"), Err(ParseError::Quote));
    }

    #[test]
    fn parses_shutdown_commands() {
        assert_eq!(ok("reboot"), Command::Shutdown(Kind::Reboot(None)));
        assert_eq!(
            ok("reboot 0 tryboot"),
            Command::Shutdown(Kind::Reboot(Some("0 tryboot".into())))
        );
        assert_eq!(ok("poweroff"), Command::Shutdown(Kind::PowerOff));
        assert_eq!(ok("halt"), Command::Shutdown(Kind::Halt));
        assert!(parse("halt now").is_err());
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t"), Ok(None));
    }

    #[test]
    fn usage_errors() {
        for line in [
            "cat", "cat a b", "ls a b", "write", "append", "mkdir", "rm", "rm a b", "run",
            "run   ", "mounts x", "status x",
        ] {
            match parse(line) {
                Err(ParseError::Usage(_)) => {}
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_command_lists_the_known_ones() {
        let err = parse("frobnicate now").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown command 'frobnicate' (try: cat, write, append, mkdir, rm, ls, mounts, status, run, reboot, poweroff, halt)"
        );
        let long = "é".repeat(100);
        assert_eq!(
            parse(&long),
            Err(ParseError::Unknown(format!("{}...", "é".repeat(MAX_ECHO))))
        );
        // Commands are case-sensitive, like a shell's.
        assert!(matches!(parse("CAT /x"), Err(ParseError::Unknown(_))));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Console bytes come from a serial line: nothing may panic,
            /// and no line handed out exceeds the cap.
            #[test]
            fn any_bytes_in_bounded_lines_out(chunks in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..3000), 0..8)
            ) {
                let mut r = LineReader::default();
                for c in &chunks {
                    for line in r.feed(c).into_iter().flatten() {
                        prop_assert!(line.len() <= MAX_LINE);
                        prop_assert!(!line.contains(&b'\n'));
                    }
                    prop_assert!(r.buf.len() <= MAX_LINE);
                }
            }

            #[test]
            fn parse_never_panics(line in "\\PC{0,200}") {
                let _ = parse(&line);
            }

            #[test]
            fn plain_run_words_round_trip(args in proptest::collection::vec("[a-zA-Z0-9/._=-]{1,12}", 1..6)) {
                let line = format!("run {}", args.join(" "));
                let cmd = parse(&line).unwrap().unwrap();
                prop_assert_eq!(cmd, Command::Run { program: args[0].clone(), args: args[1..].to_vec() });
            }
        }
    }
}
