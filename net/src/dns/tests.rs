use super::*;
use proptest::prelude::*;

/// A reply to query `id` for `qname`/`qtype` with `rcode` and records
/// `(owner, type, data)`; an owner of `None` points at the question.
fn reply(
    id: u16,
    qname: &str,
    qtype: u16,
    rcode: u8,
    records: &[(Option<&str>, u16, &[u8])],
) -> Vec<u8> {
    let mut m = encode_query(id, qname, qtype);
    m[2] = 0x81;
    m[3] = 0x80 | rcode;
    m[7] = records.len() as u8;
    for (owner, rtype, data) in records {
        match owner {
            Some(name) => m.extend_from_slice(&wire_name(name)),
            None => m.extend_from_slice(&[0xc0, 12]),
        }
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
    }
    m
}

#[test]
fn literals_and_hosts_need_no_nameserver() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hosts"),
        "127.0.0.1 localhost\n# 10.0.0.9 commented\n192.0.2.7  updates.example  upd # alias\n::1 localhost\n",
    )
    .unwrap();
    let r = Resolver {
        hosts: dir.path().join("hosts"),
        resolv_conf: dir.path().join("none"),
        timeout: Duration::from_millis(200),
    };
    assert_eq!(
        r.resolve("192.0.2.1", 443).unwrap(),
        vec!["192.0.2.1:443".parse().unwrap()]
    );
    assert_eq!(
        r.resolve("[::1]", 8443).unwrap(),
        vec!["[::1]:8443".parse().unwrap()]
    );
    assert_eq!(
        r.resolve("UPD", 1).unwrap(),
        vec!["192.0.2.7:1".parse().unwrap()]
    );
    assert_eq!(
        r.resolve("localhost", 2).unwrap(),
        vec!["127.0.0.1:2".parse().unwrap(), "[::1]:2".parse().unwrap()]
    );
    let err = r.resolve("elsewhere.example", 1).unwrap_err().to_string();
    assert!(err.contains("no nameserver"), "{err}");
    assert!(r.resolve("bad name", 1).is_err());
    assert!(r.resolve("a..b", 1).is_err());
}

#[test]
fn answers_are_parsed_through_cnames_and_errors_named() {
    // www.example -> CNAME cdn.example -> A 192.0.2.5, with a compressed
    // CNAME target and a record for an unrelated name that is dropped.
    let cdn = wire_name("cdn.example");
    let m = reply(
        7,
        "www.example",
        A,
        0,
        &[
            (None, CNAME, &cdn),
            (Some("elsewhere.example"), A, &[198, 51, 100, 1]),
            (Some("CDN.example"), A, &[192, 0, 2, 5]),
        ],
    );
    assert_eq!(
        parse_reply(&m, 7, "www.example", A),
        Reply::Addresses(vec![IpAddr::from([192, 0, 2, 5])])
    );
    // Addresses only for another name: none for this one.
    let other = reply(
        7,
        "www.example",
        A,
        0,
        &[(Some("evil.example"), A, &[6, 6, 6, 6])],
    );
    assert_eq!(
        parse_reply(&other, 7, "www.example", A),
        Reply::Addresses(vec![])
    );
    let nx = reply(7, "nope.example", A, 3, &[]);
    assert_eq!(parse_reply(&nx, 7, "nope.example", A), Reply::NoSuchName);
    let servfail = reply(7, "www.example", AAAA, 2, &[]);
    assert!(
        matches!(parse_reply(&servfail, 7, "www.example", AAAA), Reply::Error(e) if e.contains("code 2"))
    );
    // Truncated records are errors, never panics.
    for cut in 0..m.len() {
        let _ = parse_reply(&m[..cut], 7, "www.example", A);
    }
}

#[test]
fn replies_to_other_queries_are_not_ours() {
    let good = reply(7, "www.example", A, 0, &[(None, A, &[192, 0, 2, 5])]);
    assert!(matches!(
        parse_reply(&good, 7, "WWW.Example.", A),
        Reply::Addresses(_)
    ));
    // Another id, another name, another type, another class, a query
    // rather than a response, two questions: all ignored.
    assert_eq!(parse_reply(&good, 8, "www.example", A), Reply::NotOurs);
    let other_name = reply(7, "www.example.org", A, 0, &[(None, A, &[192, 0, 2, 6])]);
    assert_eq!(
        parse_reply(&other_name, 7, "www.example", A),
        Reply::NotOurs
    );
    assert_eq!(parse_reply(&good, 7, "www.example", AAAA), Reply::NotOurs);
    let mut chaos = good.clone();
    let class_at = 12 + wire_name("www.example").len() + 2;
    chaos[class_at + 1] = 3;
    assert_eq!(parse_reply(&chaos, 7, "www.example", A), Reply::NotOurs);
    let mut query = good.clone();
    query[2] &= 0x7f;
    assert_eq!(parse_reply(&query, 7, "www.example", A), Reply::NotOurs);
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(parse_reply(&two, 7, "www.example", A), Reply::NotOurs);
    // A NXDOMAIN for someone else's question must not end our lookup.
    let nx = reply(7, "other.example", A, 3, &[]);
    assert_eq!(parse_reply(&nx, 7, "www.example", A), Reply::NotOurs);
    // One label "www.example" is not the two labels www, example.
    let mut dotted = encode_query(7, "x", A);
    dotted.truncate(12);
    dotted[2] = 0x81;
    dotted.extend_from_slice(b"\x0bwww.example\x00\x00\x01\x00\x01");
    assert_eq!(parse_reply(&dotted, 7, "www.example", A), Reply::NotOurs);
}

#[test]
fn compression_loops_end() {
    // An answer whose owner points at itself, and one pointing forwards.
    let mut m = reply(7, "www.example", A, 0, &[]);
    m[7] = 1;
    let here = m.len() as u8;
    m.extend_from_slice(&[0xc0, here, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
    assert_eq!(
        parse_reply(&m, 7, "www.example", A),
        Reply::Error("malformed answer".into())
    );
    let last = m.len() - 16;
    m[last + 1] = here + 2;
    assert_eq!(
        parse_reply(&m, 7, "www.example", A),
        Reply::Error("malformed answer".into())
    );
}

proptest! {
    #[test]
    fn any_datagram_parses_or_is_refused(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), keep_header in any::<bool>()) {
        if keep_header && bytes.len() >= 12 {
            // Mostly a reply to our query, so the parser gets past the header.
            let q = encode_query(7, "www.example", A);
            bytes[..12].copy_from_slice(&q[..12]);
            bytes[2] |= 0x80;
            bytes[2] &= !0x78;
        }
        let _ = parse_reply(&bytes, 7, "www.example", A);
    }

    #[test]
    fn mangled_replies_never_panic(at in 0usize..60, byte in any::<u8>()) {
        let cdn = wire_name("cdn.example");
        let mut m = reply(7, "www.example", A, 0, &[(None, CNAME, &cdn), (None, A, &[1, 2, 3, 4])]);
        let i = at % m.len();
        m[i] = byte;
        let _ = parse_reply(&m, 7, "www.example", A);
    }
}
