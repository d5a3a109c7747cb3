//! How each direction of a stream ends, in virtual time: RESET ends the
//! sender's direction only, STOP ends the receiver's and fails the writer with
//! its code, a FIN is acknowledged, codes survive until the application sees
//! them, and every frame of a stream keeps its lane flag.

use std::time::Duration;

use bytes::Bytes;
use dwcp_core::frame::{Encoding, StreamOptions as Bits};
use dwcp_core::sim::{LinkConfig, Pair};
use dwcp_core::{CodecId, Config, ErrorCode, Event, OpenParams, StreamError, StreamId};

fn link() -> LinkConfig {
    LinkConfig {
        bandwidth_bps: 100_000_000,
        one_way_delay: Duration::from_millis(5),
        ..LinkConfig::default()
    }
}

fn pair() -> Pair {
    let mut pair = Pair::new(Config::default(), Config::default(), link());
    assert!(pair.run_until(Duration::from_secs(2), |p| {
        p.client.conn.is_established() && p.server.conn.is_established()
    }));
    pair
}

/// Opens a client stream with `data` and waits until the server knows it.
fn open_with(pair: &mut Pair, params: OpenParams, data: &'static [u8]) -> StreamId {
    let id = pair.client.conn.open_stream(params).expect("open");
    assert_eq!(
        pair.client.conn.send(id, Bytes::from_static(data)),
        Ok(data.len())
    );
    assert!(pair.run_until(Duration::from_secs(1), |p| p
        .server
        .conn
        .stream_state(id)
        .is_some()));
    id
}

/// Reads everything available on `id` at the server until `Blocked`, the end or an error.
fn drain(conn: &mut dwcp_core::Connection, id: StreamId) -> (Vec<u8>, Result<(), StreamError>) {
    let mut out = Vec::new();
    loop {
        match conn.recv(id, usize::MAX) {
            Ok(Some(b)) => out.extend_from_slice(&b),
            Ok(None) => return (out, Ok(())),
            Err(StreamError::Blocked) => return (out, Err(StreamError::Blocked)),
            Err(e) => return (out, Err(e)),
        }
    }
}

#[test]
fn reset_ends_only_the_senders_direction() {
    let mut pair = pair();
    let id = open_with(&mut pair, OpenParams::default(), b"request");
    pair.client
        .conn
        .reset_send(id, ErrorCode::Unknown(0x1234))
        .expect("reset");
    assert!(pair.run_until(Duration::from_secs(1), |p| {
        matches!(p.server.conn.recv(id, 1024), Err(StreamError::Reset(_)))
    }));
    // The server's direction goes on and ends cleanly.
    assert_eq!(
        pair.server.conn.send(id, Bytes::from_static(b"answer")),
        Ok(6)
    );
    pair.server.conn.finish(id).expect("finish");
    let mut got = Vec::new();
    let mut end = None;
    assert!(pair.run_until(Duration::from_secs(1), |p| {
        let (b, r) = drain(&mut p.client.conn, id);
        got.extend(b);
        if r != Err(StreamError::Blocked) {
            end = Some(r);
        }
        end.is_some()
    }));
    assert_eq!(got, b"answer");
    assert_eq!(end, Some(Ok(())));
    // Both sides forget the stream once each end was seen.
    assert!(pair.run_until(Duration::from_secs(1), |p| p
        .client
        .conn
        .stream_state(id)
        .is_none()
        && p.server.conn.stream_state(id).is_none()));
}

#[test]
fn stop_fails_the_writer_with_the_readers_code() {
    let mut pair = pair();
    let id = open_with(&mut pair, OpenParams::default(), b"first");
    pair.server
        .conn
        .stop(id, ErrorCode::Unknown(0x77))
        .expect("stop");
    assert!(pair.run_until(Duration::from_secs(1), |p| p
        .client
        .conn
        .send_error(id)
        .is_some()));
    assert_eq!(
        pair.client.conn.send(id, Bytes::from_static(b"more")),
        Err(StreamError::Stopped(ErrorCode::Unknown(0x77)))
    );
    // The writer answered with RESET: the server's direction can still finish,
    // and the stream is forgotten on both sides.
    pair.server.conn.finish(id).expect("finish");
    assert!(pair.run_until(Duration::from_secs(1), |p| {
        let _ = drain(&mut p.client.conn, id);
        p.client.conn.stream_state(id).is_none() && p.server.conn.stream_state(id).is_none()
    }));
}

#[test]
fn reset_code_survives_until_the_reader_sees_it() {
    let mut pair = pair();
    let id = pair
        .client
        .conn
        .open_stream(OpenParams::default())
        .expect("open");
    assert!(pair.run_until(Duration::from_secs(1), |p| p
        .server
        .conn
        .stream_state(id)
        .is_some()));
    // The peer resets its direction; this side's writer lets go first.
    pair.server
        .conn
        .reset_send(id, ErrorCode::Unknown(0x1234))
        .expect("reset");
    pair.run_until(Duration::from_millis(100), |_| false);
    pair.client
        .conn
        .reset_send(id, ErrorCode::Cancel)
        .expect("reset");
    pair.client.conn.detach_writer(id);
    pair.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(
        pair.client.conn.recv(id, 1024),
        Err(StreamError::Reset(ErrorCode::Unknown(0x1234)))
    );
}

#[test]
fn fin_is_acknowledged_to_the_writer() {
    let mut pair = pair();
    let id = open_with(&mut pair, OpenParams::default(), b"all of it");
    pair.client.conn.finish(id).expect("finish");
    let mut acked = false;
    assert!(pair.run_until(Duration::from_secs(1), |p| {
        while let Some(ev) = p.client.conn.poll_event() {
            acked |= ev == Event::StreamAcked(id);
        }
        acked
    }));
}

#[test]
fn every_stream_has_room_for_one_compressed_chunk() {
    // With 1,100 open streams each stream's share of the 64 MiB send buffer
    // is 64 KiB, below one 128 KiB compressed chunk.
    let mut pair = pair();
    for _ in 0..1100 {
        pair.client
            .conn
            .open_stream(OpenParams::default())
            .expect("open");
    }
    let id = pair
        .client
        .conn
        .open_stream(OpenParams::default())
        .expect("open");
    let raw = 128 * 1024;
    let payload = dwcp_core::codec::compress(CodecId::Lz4, 0, &vec![7u8; raw]).expect("lz4");
    let enc = Encoding {
        codec: CodecId::Lz4,
        raw_len: raw as u32,
    };
    assert_eq!(
        pair.client.conn.send_encoded(id, enc, payload.clone()),
        Ok(())
    );
    // A second chunk waits for the first to leave: the bound still holds.
    assert_eq!(
        pair.client.conn.send_encoded(id, enc, payload),
        Err(StreamError::Blocked)
    );
}

#[test]
fn a_fin_queued_after_the_stream_is_forgotten_keeps_its_lane() {
    let mut pair = pair();
    let params = OpenParams {
        options: Bits::INTERACTIVE,
        ..OpenParams::default()
    };
    let id = open_with(&mut pair, params, b"x");
    // The server ends its direction first, and the client reads it all, so
    // the client's bare FIN makes the core forget the stream at once.
    pair.server.conn.finish(id).expect("finish");
    assert!(
        pair.run_until(Duration::from_secs(1), |p| drain(&mut p.client.conn, id).1
            == Ok(()))
    );
    pair.client.transmit = false;
    pair.client.conn.finish(id).expect("finish");
    assert!(pair.client.conn.stream_state(id).is_none());
    let t = pair.client.conn.poll_transmit(pair.now).expect("the FIN");
    assert_eq!(t.stream, id);
    assert!(t.interactive, "the FIN must take the interactive lane");
}
