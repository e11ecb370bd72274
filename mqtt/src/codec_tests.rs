//! Round trips, known bytes from the standard, refusals, and property
//! tests that the decoder never panics.
use super::*;
use proptest::prelude::*;

fn round_trip(p: Packet) {
    let mut buf = Vec::new();
    encode(&p, &mut buf).unwrap();
    assert_eq!(wanted(&buf), Some(buf.len()));
    let (back, used) = decode(&buf, usize::MAX).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(back, p);
    // Every proper prefix is "need more", never an error or a packet.
    for cut in 0..buf.len() {
        assert_eq!(decode(&buf[..cut], usize::MAX), Ok(None), "prefix {cut}");
    }
}

#[test]
fn every_packet_round_trips() {
    round_trip(Packet::Connect(Connect {
        client_id: "thing-1".into(),
        keep_alive_secs: 300,
        clean_session: true,
        will: Some(Will {
            topic: "keel/things/thing-1/presence".into(),
            payload: b"{\"online\":false}".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        username: Some("u".into()),
        password: Some(b"p".to_vec()),
    }));
    round_trip(Packet::ConnAck {
        session_present: true,
        code: 5,
    });
    round_trip(Packet::Publish(Publish {
        topic: "a/b".into(),
        payload: vec![7; 200_000],
        qos: QoS::AtLeastOnce,
        packet_id: 9,
        retain: false,
        dup: true,
    }));
    round_trip(Packet::PubAck(65535));
    round_trip(Packet::Subscribe {
        packet_id: 1,
        filters: vec![
            ("a/+".into(), QoS::AtLeastOnce),
            ("#".into(), QoS::AtMostOnce),
        ],
    });
    round_trip(Packet::SubAck {
        packet_id: 1,
        codes: vec![1, 0x80],
    });
    round_trip(Packet::Unsubscribe {
        packet_id: 2,
        filters: vec!["x".into()],
    });
    round_trip(Packet::UnsubAck(2));
    round_trip(Packet::PingReq);
    round_trip(Packet::PingResp);
    round_trip(Packet::Disconnect);
}

#[test]
fn known_bytes_from_the_standard() {
    // PINGREQ is C0 00; a CONNACK accepting is 20 02 00 00.
    let mut b = Vec::new();
    encode(&Packet::PingReq, &mut b).unwrap();
    assert_eq!(b, [0xc0, 0x00]);
    assert_eq!(
        decode(&[0x20, 2, 0, 0], 10).unwrap(),
        Some((
            Packet::ConnAck {
                session_present: false,
                code: 0
            },
            4
        ))
    );
    // 321 = 0xC1 0x02 (the standard's example of a two-byte length).
    let mut b = Vec::new();
    frame(&mut b, 0x30, &[0; 321]).unwrap();
    assert_eq!(&b[..3], &[0x30, 0xc1, 0x02]);
}

#[test]
fn an_oversized_packet_is_refused_from_its_header_alone() {
    // Type PUBLISH, remaining length 268,435,455: five bytes in hand.
    let err = decode(&[0x30, 0xff, 0xff, 0xff, 0x7f], crate::MAX_PACKET).unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { size, .. } if size > 200_000_000));
    assert!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 30).is_err());
}

#[test]
fn qos2_and_junk_are_errors() {
    assert_eq!(
        decode(&[0x34, 5, 0, 1, b'a', 0, 1], 100),
        Err(CodecError::Unsupported("QoS 2"))
    );
    assert_eq!(
        decode(&[0x50, 2, 0, 1], 100),
        Err(CodecError::Unsupported("QoS 2 (PUBREC/PUBREL/PUBCOMP)"))
    );
    assert_eq!(decode(&[0x00, 0], 100), Err(CodecError::UnknownType(0)));
    assert!(decode(&[0x20, 3, 0, 0, 0], 100).is_err(), "trailing byte");
    assert!(decode(&[0xc0, 0x80, 0x00], 100).is_err(), "overlong length");
}

#[test]
fn filters_match_like_a_broker() {
    assert!(topic_matches(
        "$aws/things/t/shadow/#",
        "$aws/things/t/shadow/get/accepted"
    ));
    assert!(topic_matches(
        "$aws/things/+/jobs/notify-next",
        "$aws/things/t/jobs/notify-next"
    ));
    assert!(!topic_matches(
        "$aws/things/+/jobs/notify-next",
        "$aws/things/t/jobs/x"
    ));
    assert!(!topic_matches("#", "$SYS/x"), "# does not match $ topics");
    assert!(topic_matches("a/#", "a"));
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..1000) {
        if let Ok(Some((_, used))) = decode(&bytes, max) {
            prop_assert!(used <= bytes.len() && used <= max);
        }
    }

    #[test]
    fn publishes_round_trip(topic in "[a-z$/]{1,40}", payload in proptest::collection::vec(any::<u8>(), 0..3000),
                            q in qos(), id in 1u16.., retain: bool, dup: bool) {
        let p = Publish { topic, payload, qos: q, packet_id: if q == QoS::AtMostOnce { 0 } else { id }, retain, dup };
        let mut buf = Vec::new();
        encode(&Packet::Publish(p.clone()), &mut buf).unwrap();
        let (back, used) = decode(&buf, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, Packet::Publish(p));
    }

    #[test]
    fn subscribes_round_trip(filters in proptest::collection::vec(("[a-z+#/]{1,20}", qos()), 1..5), id: u16) {
        round_trip(Packet::Subscribe { packet_id: id, filters });
    }
}
