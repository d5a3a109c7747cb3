//! Frame codec: byte-exact unit tests per kind, zero-copy checks, and
//! property tests (round trip; arbitrary bytes never panic).

use bytes::{Bytes, BytesMut};
use dwcp_core::frame::{
    Data, Encoding, Frame, FrameDecoder, GoAway, Hello, Open, Ping, Reset, Window, HEADER_LEN,
};
use dwcp_core::{Capabilities, CodecId, ErrorCode, FrameError, StreamOptions};
use proptest::prelude::*;

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    FrameDecoder::new(256 * 1024).decode(&mut BytesMut::from(bytes))
}

fn sample_hello() -> Hello {
    Hello {
        min_version: 1,
        max_version: 2,
        capabilities: Capabilities::ALL,
        required: Capabilities::KEEPALIVE,
        codecs: 0b111,
        max_frame_payload: 262_144,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 262_144,
        initial_connection_window: 1 << 20,
        max_streams: 10_000,
        class_names: Vec::new(),
    }
}

#[test]
fn hello_layout() {
    let b = Frame::Hello(Box::new(sample_hello())).to_bytes();
    assert_eq!(&b[..10], &[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 38]);
    assert_eq!(&b[10..14], b"DWCP");
    assert_eq!(&b[14..18], &[0, 1, 0, 2]);
    assert_eq!(b.len(), 48);
    assert_eq!(
        decode_one(&b),
        Ok(Some(Frame::Hello(Box::new(sample_hello()))))
    );
}

#[test]
fn hello_with_extension_bytes_is_accepted() {
    let mut b = BytesMut::from(&Frame::Hello(Box::new(sample_hello())).to_bytes()[..]);
    b[9] = 38 + 6;
    b.extend_from_slice(b"future");
    assert_eq!(
        decode_one(&b),
        Ok(Some(Frame::Hello(Box::new(sample_hello()))))
    );
}

#[test]
fn open_layout() {
    let f = Frame::Open(Open {
        stream: 5,
        class: 2,
        priority: 1,
        weight: 300,
        options: StreamOptions::NO_COMPRESSION,
        route: Bytes::from_static(b"db"),
    });
    let b = f.to_bytes();
    assert_eq!(
        &b[..],
        &[0x02, 0, 0, 0, 0, 5, 0, 0, 0, 11, 2, 1, 0x01, 0x2c, 0, 0, 0, 1, 2, b'd', b'b']
    );
    assert_eq!(decode_one(&b), Ok(Some(f)));
}

#[test]
fn open_rejects_zero_weight_and_bad_route_length() {
    let mut b = BytesMut::from(
        &Frame::Open(Open {
            stream: 1,
            class: 0,
            priority: 0,
            weight: 1,
            options: StreamOptions::default(),
            route: Bytes::from_static(b"x"),
        })
        .to_bytes()[..],
    );
    b[13] = 0;
    assert!(matches!(decode_one(&b), Err(FrameError::Invalid { .. })));
    b[13] = 1;
    b[18] = 9;
    assert!(matches!(decode_one(&b), Err(FrameError::Invalid { .. })));
}

#[test]
fn data_layout_plain_and_encoded() {
    let plain = Frame::Data(Data {
        stream: 3,
        encoding: None,
        payload: Bytes::from_static(b"abc"),
        fin: true,
    });
    let b = plain.to_bytes();
    assert_eq!(
        &b[..],
        &[0x03, 0x01, 0, 0, 0, 3, 0, 0, 0, 3, b'a', b'b', b'c']
    );
    assert_eq!(decode_one(&b), Ok(Some(plain)));
    let enc = Frame::Data(Data {
        stream: 3,
        encoding: Some(Encoding {
            codec: CodecId::Zstd,
            raw_len: 1000,
        }),
        payload: Bytes::from_static(b"zz"),
        fin: false,
    });
    let b = enc.to_bytes();
    assert_eq!(&b[..HEADER_LEN], &[0x03, 0x02, 0, 0, 0, 3, 0, 0, 0, 7]);
    assert_eq!(&b[HEADER_LEN..HEADER_LEN + 5], &[2, 0, 0, 0x03, 0xe8]);
    assert_eq!(decode_one(&b), Ok(Some(enc)));
}

#[test]
fn data_payload_is_a_slice_of_the_receive_buffer() {
    let payload = vec![9u8; 100_000];
    let f = Frame::Data(Data {
        stream: 1,
        encoding: None,
        payload: Bytes::from(payload),
        fin: false,
    });
    let mut buf = BytesMut::from(&f.to_bytes()[..]);
    let base = buf.as_ptr() as usize;
    let Some(Frame::Data(d)) = FrameDecoder::new(256 * 1024).decode(&mut buf).expect("ok") else {
        panic!("not DATA");
    };
    // Same memory, offset by the header: no copy was made.
    assert_eq!(d.payload.as_ptr() as usize, base + HEADER_LEN);
}

#[test]
fn data_encode_keeps_payload_separate() {
    let payload = Bytes::from(vec![1u8; 4096]);
    let f = Frame::Data(Data {
        stream: 1,
        encoding: None,
        payload: payload.clone(),
        fin: false,
    });
    let mut head = BytesMut::new();
    let out = f.encode(&mut head);
    assert_eq!(head.len(), HEADER_LEN);
    assert_eq!(out.as_ptr(), payload.as_ptr());
}

#[test]
fn window_reset_ping_goaway_layouts() {
    let w = Frame::Window(Window {
        stream: 0,
        credit: 65536,
    });
    assert_eq!(
        &w.to_bytes()[..],
        &[4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0]
    );
    let r = Frame::Reset(Reset {
        stream: 7,
        code: ErrorCode::Cancel,
    });
    assert_eq!(
        &r.to_bytes()[..],
        &[5, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 10]
    );
    let p = Frame::Ping(Ping(*b"abcdefgh"));
    assert_eq!(&p.to_bytes()[..10], &[6, 0, 0, 0, 0, 0, 0, 0, 0, 8]);
    let q = Frame::Pong(Ping(*b"abcdefgh"));
    assert_eq!(q.to_bytes()[0], 7);
    let g = Frame::GoAway(GoAway {
        last_stream: 9,
        code: ErrorCode::NoError,
        reason: "bye".into(),
    });
    assert_eq!(
        &g.to_bytes()[..],
        &[8, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0, 9, 0, 0, 0, 0, b'b', b'y', b'e']
    );
    for f in [w, r, p, q, g] {
        assert_eq!(decode_one(&f.to_bytes()), Ok(Some(f)));
    }
}

/// Found by cargo-fuzz: a reason of invalid UTF-8 grew past 1,024 bytes when
/// decoded lossily, so re-encoding truncated it.
#[test]
fn goaway_reason_with_invalid_utf8_round_trips() {
    let mut b = vec![8u8, 0, 0, 0, 0, 0];
    b.extend_from_slice(&(8u32 + 1024).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    b.extend(std::iter::repeat_n(0xffu8, 1024));
    let Ok(Some(f @ Frame::GoAway(_))) = decode_one(&b) else {
        panic!("GOAWAY expected");
    };
    let Frame::GoAway(g) = &f else { unreachable!() };
    assert!(g.reason.len() <= 1024);
    assert_eq!(decode_one(&f.to_bytes()), Ok(Some(f.clone())));
}

#[test]
fn malformed_small_frames() {
    // WINDOW with zero credit, PING of 7 bytes, HELLO on a stream, DATA on stream 0.
    assert!(decode_one(&[4, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0]).is_err());
    assert!(decode_one(&[6, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7]).is_err());
    let mut h = BytesMut::from(&Frame::Hello(Box::new(sample_hello())).to_bytes()[..]);
    h[5] = 1;
    assert!(decode_one(&h).is_err());
    assert!(decode_one(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    // Unknown DATA flag.
    assert!(decode_one(&[3, 0x10, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    // Truncated RESET.
    assert!(matches!(
        decode_one(&[5, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0]),
        Err(FrameError::Truncated { .. })
    ));
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let b = Frame::Ping(Ping([1; 8])).to_bytes();
    let d = FrameDecoder::new(1024);
    let mut buf = BytesMut::new();
    for (i, byte) in b.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let r = d.decode(&mut buf).expect("no error");
        assert_eq!(r.is_some(), i == b.len() - 1);
    }
}

#[test]
fn error_codes_round_trip() {
    for v in 0..40 {
        assert_eq!(ErrorCode::from_u32(v).to_u32(), v);
    }
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let stream = 1u32..=u32::MAX;
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<[u32; 5]>(),
            prop::collection::btree_set("[a-z-]{1,12}", 0..6),
        )
            .prop_map(|(a, b, c, r, k, l, names)| Frame::Hello(Box::new(Hello {
                min_version: a.min(b),
                max_version: a.max(b),
                capabilities: Capabilities(c),
                required: Capabilities(r),
                codecs: k,
                max_frame_payload: l[0],
                max_decoded_frame: l[1],
                initial_stream_window: l[2],
                initial_connection_window: l[3],
                max_streams: l[4],
                class_names: names.into_iter().collect(),
            }))),
        (
            stream.clone(),
            any::<u8>(),
            any::<u8>(),
            1u16..,
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=255)
        )
            .prop_map(|(s, c, p, w, o, r)| Frame::Open(Open {
                stream: s,
                class: c,
                priority: p,
                weight: w,
                options: StreamOptions(o),
                route: Bytes::from(r),
            })),
        (
            stream.clone(),
            proptest::option::of((1u8..=2, any::<u32>())),
            proptest::collection::vec(any::<u8>(), 0..2000),
            any::<bool>()
        )
            .prop_map(|(s, e, p, fin)| Frame::Data(Data {
                stream: s,
                encoding: e.map(|(c, raw_len)| Encoding {
                    codec: CodecId::from_u8(c).unwrap_or(CodecId::Lz4),
                    raw_len,
                }),
                payload: Bytes::from(p),
                fin,
            })),
        (any::<u32>(), 1u32..).prop_map(|(s, c)| Frame::Window(Window {
            stream: s,
            credit: c
        })),
        (stream.clone(), any::<u32>()).prop_map(|(s, c)| Frame::Reset(Reset {
            stream: s,
            code: ErrorCode::from_u32(c),
        })),
        any::<[u8; 8]>().prop_map(|p| Frame::Ping(Ping(p))),
        any::<[u8; 8]>().prop_map(|p| Frame::Pong(Ping(p))),
        (any::<u32>(), any::<u32>(), "[a-z ]{0,100}").prop_map(|(l, c, r)| Frame::GoAway(GoAway {
            last_stream: l,
            code: ErrorCode::from_u32(c),
            reason: r,
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(frames in proptest::collection::vec(arb_frame(), 1..8)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            let payload = f.encode(&mut buf);
            buf.extend_from_slice(&payload);
        }
        let d = FrameDecoder::new(256 * 1024);
        for f in &frames {
            prop_assert_eq!(d.decode(&mut buf), Ok(Some(f.clone())));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        dwcp_core::fuzzing::decode_frames(&data);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_session(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        dwcp_core::fuzzing::session(&data);
    }

    #[test]
    fn valid_frame_sequences_never_panic_a_session(frames in proptest::collection::vec(arb_frame(), 0..40), step in 0u8..255) {
        let mut data = vec![step];
        for f in frames {
            data.extend_from_slice(&f.to_bytes());
        }
        dwcp_core::fuzzing::session(&data);
    }
}

#[test]
fn hello_class_names_round_trip_and_malformed_extensions_are_errors() {
    let mut h = sample_hello();
    h.class_names = vec!["bulk".into(), "interactive".into()];
    let bytes = Frame::Hello(Box::new(h.clone())).to_bytes();
    let dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        dec.decode(&mut buf).expect("decodes"),
        Some(Frame::Hello(Box::new(h)))
    );

    // Extension bodies after the 38-byte fixed part, each framed as a HELLO.
    let fixed = Frame::Hello(Box::new(sample_hello())).to_bytes();
    let with_ext = |ext: &[u8]| {
        let mut b = BytesMut::from(&fixed[..]);
        b.extend_from_slice(ext);
        let len = (b.len() - HEADER_LEN) as u32;
        b[6..10].copy_from_slice(&len.to_be_bytes());
        b
    };
    // An unknown extension type is skipped; bytes that do not frame as
    // extensions are ignored (as version 1 always ignored them).
    for ignored in [
        &[0, 9, 0, 2, 0xAA, 0xBB][..],
        &[0, 1],
        &[0, 1, 0, 9, 1, 1, b'a'],
    ] {
        let mut ok = with_ext(ignored);
        assert_eq!(
            FrameDecoder::new(1 << 20).decode(&mut ok),
            Ok(Some(Frame::Hello(Box::new(sample_hello())))),
            "{ignored:?}"
        );
    }
    // A class-names extension that is malformed is an error.
    for bad in [
        &[0, 1, 0, 0][..],                  // empty class-names body
        &[0, 1, 0, 2, 2, 1],                // count 2, one name missing
        &[0, 1, 0, 3, 1, 0, b'a'],          // empty name
        &[0, 1, 0, 3, 1, 2, b'a'],          // name truncated
        &[0, 1, 0, 3, 1, 1, 0xFF],          // not UTF-8
        &[0, 1, 0, 5, 2, 1, b'a', 1, b'a'], // twice
        &[0, 1, 0, 4, 1, 1, b'a', b'z'],    // trailing bytes
    ] {
        let mut b = with_ext(bad);
        assert!(
            FrameDecoder::new(1 << 20).decode(&mut b).is_err(),
            "{bad:?} accepted"
        );
    }
}
