//! The adapter over the `toml` crate: the values it maps, the lines it
//! finds, its errors, and that no input can exhaust a small stack.

use super::*;

fn doc(text: &str) -> Table {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err(text: &str) -> Error {
    parse(text).expect_err(text)
}

fn get<'a>(t: &'a Table, path: &[&str]) -> &'a Item {
    let (last, parents) = path.split_last().unwrap();
    let mut t = t;
    for p in parents {
        let Value::Table(inner) = &t.get(p).unwrap_or_else(|| panic!("no {p}")).value else {
            panic!("{p} is not a table")
        };
        t = inner;
    }
    t.get(last).unwrap_or_else(|| panic!("no {last}"))
}

/// Our tree without line numbers, in the shape of the crate's serde
/// `Value`, so the mapping (radixes, escapes, nesting) can be compared
/// with the crate's own reading of the same text.
fn to_toml(v: &Value) -> ::toml::Value {
    match v {
        Value::Str(s) => ::toml::Value::String(s.clone()),
        Value::Int(i) => ::toml::Value::Integer(*i),
        Value::Float(f) => ::toml::Value::Float(*f),
        Value::Bool(b) => ::toml::Value::Boolean(*b),
        Value::Array(a) => ::toml::Value::Array(a.iter().map(|i| to_toml(&i.value)).collect()),
        Value::Table(t) => ::toml::Value::Table(
            t.entries
                .iter()
                .map(|(k, i)| (k.clone(), to_toml(&i.value)))
                .collect(),
        ),
    }
}

fn same_as_toml_crate(text: &str) {
    let ours = to_toml(&Value::Table(doc(text)));
    let theirs = ::toml::from_str::<::toml::Table>(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(ours, ::toml::Value::Table(theirs), "{text}");
}

/// Every key of every table sits on the line its item names.
fn keys_are_on_their_lines(text: &str, t: &Table) {
    let lines: Vec<&str> = text.lines().collect();
    for (key, item) in &t.entries {
        let line = lines[item.line - 1];
        assert!(
            line.contains(key.as_str()),
            "{key} is not on line {}: {line:?}\n{text}",
            item.line
        );
        if let Value::Table(inner) = &item.value {
            keys_are_on_their_lines(text, inner);
        }
    }
}

/// Runs `f` on a 256 KiB stack: the bound on nesting must not depend on
/// the 8 MiB a main thread gets.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn reads_a_service_file() {
    let text = "# services\nhealthy_after = 10\n\n[supervisor.root]\nstrategy = \"one_for_one\" # comment\nchildren = [\n  \"agent\", # first\n  'net',\n]\n\n[worker.agent]\ncommand = \"/usr/bin/agent\"\nenv = { RUST_LOG = \"info\", \"A B\" = 'x' }\nshutdown_timeout = 0.5\n";
    let t = doc(text);
    assert_eq!(get(&t, &["healthy_after"]).value, Value::Int(10));
    assert_eq!(get(&t, &["supervisor"]).line, 4);
    assert_eq!(get(&t, &["supervisor", "root"]).line, 4);
    let children = get(&t, &["supervisor", "root", "children"]);
    assert_eq!(children.line, 6);
    let Value::Array(items) = &children.value else {
        panic!()
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].line, 7);
    assert_eq!(items[1].line, 8);
    assert_eq!(items[1].value, Value::Str("net".into()));
    let timeout = get(&t, &["worker", "agent", "shutdown_timeout"]);
    assert_eq!((timeout.line, &timeout.value), (14, &Value::Float(0.5)));
    assert_eq!(
        get(&t, &["worker", "agent", "env", "A B"]).value,
        Value::Str("x".into())
    );
    assert_eq!(get(&t, &["worker", "agent", "env", "A B"]).line, 13);
    same_as_toml_crate(text);
}

#[test]
fn keys_keep_file_order() {
    // The crate sorts its map; errors are reported in file order.
    let t = doc("b = 1\na = 2\n[z]\n[c]\nq = 1\np = 2\n");
    let keys: Vec<&str> = t.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "a", "z", "c"]);
    let Value::Table(c) = &get(&t, &["c"]).value else {
        panic!()
    };
    let keys: Vec<&str> = c.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["q", "p"]);
}

#[test]
fn agrees_with_the_toml_crate() {
    for text in [
        "a = 1\nb = -2\nc = +3\nd = 1_000\ne = 0x1F\nf = 0o17\ng = 0b101\nh = -9223372036854775808\n",
        "a = 1.5\nb = -0.25\nc = 1e3\nd = 2.5E-2\ne = 1_0.0_1\nf = 0.0\ng = -inf\n",
        "s = \"tab\\there \\\"q\\\" \\\\ \\u00e9 \\U0001F600\"\nl = 'C:\\path'\nu = \"ünï\"\n",
        "a = []\nb = [ ]\nc = [1, 2, 3,]\nd = [[1], ['x']]\ne = [\n# c\n1,\n\n2\n]\n",
        "t = {}\nu = { a = 1, b = { c = true } }\n",
        "[a]\nx = 1\n[a.b]\ny = 2\n[c . \"d e\"]\nz = false\n",
        "[a.b.c]\nx = 1\n[a]\ny = 2\n",
        "\"quoted key\" = 1\n'lit' = 2\n-dash_under-1 = 3\n1234 = 4\n",
        "a = 1\r\nb = 2\r\n",
        // Standard TOML the old reader refused.
        "a.b = 1\na.c.d = 'x'\n[t]\nenv.K = \"v\"\n",
        "m = \"\"\"\nline one\nline two\\\n  joined\"\"\"\nl = '''\nraw \\n'''\n",
        "[[w]]\nn = 1\n[[w]]\nn = 2\n[w.sub]\nx = true\n",
        "",
        "# only a comment",
    ] {
        same_as_toml_crate(text);
        keys_are_on_their_lines(text, &doc(text));
    }
}

#[test]
fn lines_after_multi_line_values_and_in_arrays_of_tables() {
    let text =
        "m = \"\"\"\none\ntwo\n\"\"\"\nafter = 1\n[[w]]\nn = 1\n\n[[w]]\nn = 2\n[w.sub]\nx.y = 3\n";
    let t = doc(text);
    assert_eq!(get(&t, &["m"]).line, 1);
    assert_eq!(get(&t, &["after"]).line, 5);
    let Value::Array(w) = &get(&t, &["w"]).value else {
        panic!()
    };
    let lines: Vec<usize> = w.iter().map(|i| i.line).collect();
    assert_eq!(lines, [6, 9]);
    let Value::Table(second) = &w[1].value else {
        panic!()
    };
    assert_eq!(get(second, &["n"]).line, 10);
    assert_eq!(get(second, &["sub", "x", "y"]).line, 12);
    assert_eq!(get(second, &["sub", "x", "y"]).value, Value::Int(3));
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("a = 1\nb = \n", 2, "string values must be quoted"),
        ("a = 1\na = 2\n", 2, "duplicate key (at `a`)"),
        ("[x]\n[x]\n", 2, "duplicate key (at `x`)"),
        ("x = 1\n[x]\n", 2, "duplicate key (at `x`)"),
        ("t = { a = 1 }\n[t]\n", 2, "duplicate key (at `t`)"),
        ("a.b = 1\na = 2\n", 2, "duplicate key (at `a`)"),
        ("[[a]]\n[a]\n", 2, "duplicate key (at `a`)"),
        ("a = 1979-05-27\n", 1, "dates and times are not used"),
        ("\na = 07:32:00\n", 2, "dates and times are not used"),
        ("a = 9223372036854775808\n", 1, "out of range"),
        ("a = \"open\nb = 1\n", 1, "invalid basic string"),
        ("a = [1,\n2\n", 2, "unclosed array"),
        ("a = [1 2]\n", 1, "(at `1 2`)"),
        ("a = { b = 1\n", 1, "unclosed inline table"),
        ("a = 1 b = 2\n", 1, "expected newline"),
        (
            "a = yes\n",
            1,
            "string values must be quoted, expected literal string (at `yes`)",
        ),
        ("a = 01\n", 1, "leading zero"),
        ("a = 1__0\n", 1, "between digits"),
        ("a = \"\\q\"\n", 1, "escaped value"),
        ("a = \"\\u12\"\n", 1, "unicode value digits"),
        ("a = \"\\uD800\"\n", 1, "unicode hexadecimal value"),
        ("= 1\n", 1, "keys cannot be empty"),
        ("a 1\n", 1, "expected `=`"),
        ("[a\n", 1, "unclosed table"),
        ("x = 1\n\n  @\n", 3, "expected `=`"),
    ];
    for (text, line, needle) in cases {
        let e = err(text);
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.msg.contains(needle), "{text:?}: {e}");
        // Only dates are refused by the adapter rather than the parser.
        if !needle.contains("dates") {
            assert!(
                ::toml::from_str::<::toml::Table>(text).is_err(),
                "toml accepts {text:?}"
            );
        }
    }
}

#[test]
fn an_error_the_crate_gives_no_position_still_gets_its_line() {
    // Too many dotted parts: the crate reports "recursion limit", spanless.
    let long = vec!["k"; 100].join(".");
    let e = err(&format!("a = 1\n\n[{long}]\nx = 1\n"));
    assert_eq!((e.line, e.msg.as_str()), (3, "recursion limit"));
    let e = err(&format!("a = [\n1,\n]\n[t]\n{long} = 1\n[u]\n"));
    assert_eq!((e.line, e.msg.as_str()), (5, "recursion limit"));
}

#[test]
fn deep_nesting_is_an_error_even_on_a_small_stack() {
    const N: usize = 100_000;
    let cases = [
        ("[".repeat(N), ""),
        ("{".repeat(N), ""),
        (format!("a = {}", "[".repeat(N)), "max recursion depth"),
        (format!("a = {}", "{".repeat(N)), ""),
        (format!("a = {}", "{b = ".repeat(N)), "max recursion depth"),
        (
            format!("a = {}{}", "[".repeat(N), "{".repeat(N)),
            "max recursion depth",
        ),
        (format!("\n\nx = {}1{}", "[".repeat(N), "]".repeat(N)), ""),
    ];
    for (text, needle) in cases {
        let head: String = text.chars().take(12).collect();
        let e = on_small_stack(move || parse(&text)).expect_err(&head);
        assert!(e.msg.contains(needle), "{head:?}…: {e}");
        let line = if head.starts_with('\n') { 3 } else { 1 };
        assert_eq!(e.line, line, "{head:?}…: {e}");
    }
}

#[test]
fn the_deepest_accepted_document_fits_a_small_stack() {
    // A header, a dotted key and a value each just inside the crate's
    // limit, nested in one another: the adapter recurses through all.
    let text = format!(
        "[{}]\n{} = {}1{}\n",
        vec!["h"; 79].join("."),
        vec!["d"; 79].join("."),
        "[".repeat(79),
        "]".repeat(79)
    );
    let t = on_small_stack(move || parse(&text)).unwrap();
    assert_eq!(t.entries.len(), 1);
}

#[test]
fn a_header_of_many_parts_finishes() {
    // The old reader joined the whole path for every part: quadratic,
    // 36 s at boot for this file.
    let text = format!("[{}]\nx = 1\n", vec!["a"; 100_001].join("."));
    let e = on_small_stack(move || parse(&text)).unwrap_err();
    assert_eq!((e.line, e.msg.as_str()), (1, "recursion limit"));
    let text = format!("{} = 1\n", vec!["a"; 100_001].join("."));
    assert!(parse(&text).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_-]{0,6}"
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i32>().prop_map(|i| i.to_string()),
            (0u32..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            any::<bool>().prop_map(|b| b.to_string()),
            "[ -~&&[^\"\\\\]]{0,10}".prop_map(|s| format!("\"{s}\"")),
            "[ -~&&[^']]{0,10}".prop_map(|s| format!("'{s}'")),
            "[ -~&&[^\"\\\\]]{0,10}".prop_map(|s| format!("\"\"\"\n{s}\n\"\"\"")),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => scalar(),
            1 => proptest::collection::vec(scalar(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            1 => proptest::collection::vec(scalar(), 1..4).prop_map(|v| format!("[\n  {},\n]", v.join(",\n  "))),
            1 => proptest::collection::btree_map(key(), scalar(), 0..3).prop_map(|m| {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", parts.join(", "))
            }),
        ]
    }

    fn section() -> impl Strategy<Value = String> {
        proptest::collection::btree_map(key(), value(), 0..4)
            .prop_map(|m| m.iter().map(|(k, v)| format!("{k} = {v} # c\n")).collect())
    }

    proptest! {
        #[test]
        fn generated_documents_match_the_toml_crate(
            top in section(),
            tables in proptest::collection::btree_map(("[A-Z]{1,3}", key()), section(), 0..4),
        ) {
            let mut text = top;
            for ((a, b), body) in &tables {
                text.push_str(&format!("\n[{a}.{b}]\n{body}"));
            }
            same_as_toml_crate(&text);
            keys_are_on_their_lines(&text, &doc(&text));
        }

        /// The file comes from the root filesystem or /data: any bytes
        /// give a value or an error, never a panic.
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn errors_are_on_a_line_of_the_file(text in "[\\[\\]{}=,.'\"a-c0-9 \n#_+:\\\\-]{0,80}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e}");
            }
        }
    }
}
